// The Flex Consumption plan and the function app. Identity-based connections only: the host
// (AzureWebJobsStorage__*), the pipeline's storage (DARKROOM_STORAGE__*), Cosmos
// (DARKROOM_COSMOS__*) and Application Insights all authenticate as the user-assigned identity.
// No FUNCTIONS_WORKER_RUNTIME app setting: Flex rejects it (functionAppConfig.runtime says it).

param name string
param planName string
param location string
param tags object = {}

@description('azd deploys the service with this tag value (azure.yaml services.<name>).')
param serviceName string = 'api'

param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainer string
param cosmosEndpoint string
param applicationInsightsConnectionString string

@description('Python version of the Flex runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

// Memory per instance, which also sets its CPU share on Flex (512 MB: 1/4 core; 2048 MB: 1 core;
// 4096 MB: 2 cores). Measured: the Python worker peaks at 726–884 MB RSS under load with 12 MP
// photos and all five analyzers (282–352 MB when idle), so 512 MB would be killed and also starve
// analyze (614 ms of one core per image); 2048 MB fits a batch with headroom on a full core.
@description('Instance memory in MB (the worker peaks at 726–884 MB RSS on 12 MP photos).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of scale-out (Flex allows 40–1000): also caps cost and Cosmos/Storage load.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Darkroom settings (PIPELINE_STEPS, DARKROOM_*), built in main.bicep; never secrets.')
param pipelineSettings object

// Secure, so its values stay out of this nested deployment's recorded parameters.
@secure()
@description('Secret Darkroom settings (DARKROOM_API_KEYS, DARKROOM_ADMIN_KEYS) from main.bicep\'s @secure() parameters.')
param secretSettings object = {}

@description('Origins allowed to call the app cross-origin (web pages on other hosts calling /api/*); empty = none.')
param corsOrigins array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

// Connections the Functions host and our code read, in the host's own identity-based format.
var connectionSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  DARKROOM_STORAGE__blobServiceUri: storage.properties.primaryEndpoints.blob
  DARKROOM_STORAGE__queueServiceUri: storage.properties.primaryEndpoints.queue
  DARKROOM_STORAGE__tableServiceUri: storage.properties.primaryEndpoints.table
  DARKROOM_STORAGE__credential: 'managedidentity'
  DARKROOM_STORAGE__clientId: identityClientId
  DARKROOM_COSMOS__accountEndpoint: cosmosEndpoint
  DARKROOM_COSMOS__credential: 'managedidentity'
  DARKROOM_COSMOS__clientId: identityClientId
  // Services without a connection of their own (Azure AI Vision, Event Grid topic) use this.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

// Settings of the Functions host itself. The app serves its web page at `/` (host.json
// extensions.http.routePrefix is ""), so the host's default landing page must be off.
var hostSettings = {
  AzureWebJobsDisableHomepage: 'true'
  // glibc gives every thread that allocates its own malloc arena (up to 8 per core) and keeps
  // what each frees: a worker running a dozen deliveries on threads peaked at 819 MB at 12 MP
  // with the default, 552 MB with 2 arenas, at the same throughput (docs/benchmarks.md).
  MALLOC_ARENA_MAX: '2'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      // Platform CORS for /api/*: when it is configured it answers preflights and takes precedence
      // over any CORS headers the app sets, so the app's DARKROOM_CORS_ORIGINS carries the same
      // list. No credentials: callers send a bearer token or an API key header, never cookies.
      cors: {
        allowedOrigins: corsOrigins
        supportCredentials: false
      }
    }
    functionAppConfig: {
      runtime: {
        name: 'python'
        version: pythonVersion
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
    }
  }
}

// The whole app settings collection: what is not listed here is removed on the next deploy.
// Connection and host settings come last so no pipeline/extra setting can replace them.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'appsettings'
  properties: union(pipelineSettings, secretSettings, connectionSettings, hostSettings)
}

// Deployments authenticate with Entra ID (azd, az functionapp deploy): no basic-auth publishing.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

output name string = app.name
output id string = app.id
output defaultHostName string = app.properties.defaultHostName
