// The Event Grid system topic of the storage account: the source of the BlobCreated events that
// start every image. Its subscription (eventgrid-subscription.bicep) needs the function's
// blobs_extension key, which exists only after the code is deployed, so it is deployed by the
// postdeploy hook, not here.
//
// The topic has a system-assigned identity for identity-based dead-lettering (the account has no
// shared keys): it may write blobs to the dead-letter container and nowhere else.

param name string
param location string
param tags object = {}
param storageAccountName string
param deadLetterContainer string

var storageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobService 'blobServices' existing = {
    name: 'default'

    resource deadLetters 'containers' existing = {
      name: deadLetterContainer
    }
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobService::deadLetters.id, systemTopic.id, storageBlobDataContributor)
  scope: storage::blobService::deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = systemTopic.name
output principalId string = systemTopic.identity.principalId
