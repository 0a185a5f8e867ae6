// The Event Grid subscription that starts every image: BlobCreated in the upload container →
// the `ingest` function's Event Grid blob trigger. Deployed after code deploy by
// scripts/azd/postdeploy.sh|ps1 (both the azd and the plain az path), because its endpoint
// carries the host's blobs_extension system key, which exists only once the app has started.
// Re-deploying updates the subscription of the same name in place: never a duplicate.

@description('The storage account\'s Event Grid system topic (main.bicep output EVENTGRID_SYSTEM_TOPIC_NAME).')
param systemTopicName string

@description('Function app whose `ingest` function receives the events.')
param functionAppName string

@description('Function name of the Event Grid blob trigger in function_app.py.')
param functionName string = 'ingest'

@secure()
@description('The host\'s blobs_extension system key: az functionapp keys list … --query systemKeys.blobs_extension.')
param blobsExtensionKey string

param storageAccountName string
param uploadContainer string = 'uploads'
param deadLetterContainer string = 'eventgrid-deadletter'

param subscriptionName string = 'darkroom-ingest'

@description('Event Grid retries with exponential backoff, waiting 30 s for each answer.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Give up (and dead-letter) an undelivered event after this many minutes (max 1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // defaultHostName, not <app>.azurewebsites.net: Flex apps may get a regional unique host name.
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${uploadContainer}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    // The account has no shared keys: dead-letter with the system topic's own identity, which
    // holds Storage Blob Data Contributor on this one container (eventgrid-system-topic.bicep).
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer
        }
      }
    }
  }
}

output name string = subscription.name
