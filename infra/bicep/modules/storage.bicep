// Pipeline storage: one StorageV2 account holds the host's own state (AzureWebJobsStorage), the
// Flex deployment package, the image containers, the step queues and the table service.
// Shared keys are off: every caller (the app, Event Grid dead-lettering, the operator's CLI)
// authenticates with Entra ID and a data-plane role.

@description('Storage account name (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

param location string
param tags object = {}

@description('Replication: Standard_LRS is enough for a pipeline whose originals can be re-uploaded; ZRS/GRS for more.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Image containers, by role. Names must match the DARKROOM_*_CONTAINER app settings.')
param uploadContainer string
param derivedContainer string
param claimsContainer string
param publishedContainer string

@description('Container for the Flex Consumption deployment package.')
param deploymentContainer string

@description('Container where Event Grid writes events it could not deliver.')
param deadLetterContainer string

@description('Every queue the pipeline uses (step queues, both lanes, their -poison queues, results).')
param queueNames array

@description('Tables to create in the table service: the API\'s per-caller rate limits (DARKROOM_LIMITS_TABLE).')
param tableNames array = []

@description('Lifecycle rules: days after last modification before a blob is deleted; 0 keeps blobs forever.')
@minValue(0)
param retainOriginalsDays int
@minValue(0)
param retainDerivedDays int
@minValue(0)
param retainClaimsDays int
@minValue(0)
param retainDeadLetterDays int

@description('Origins of the web pages that upload to and read from blob storage with the API\'s SAS URLs; empty = no CORS rule.')
@maxLength(64)
param corsOrigins array = []

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    dnsEndpointType: 'Standard'
    networkAcls: {
      // Event Grid (system topic, dead-lettering) reaches the account as a trusted service.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// One rule for the browser side of the API: PUT of an upload to its user-delegation SAS URL,
// GET/HEAD of a derived or published blob with a read URL. Headers are the ones the browser and
// the Storage SDK send (x-ms-blob-type, x-ms-version, x-ms-date, x-ms-client-request-id, …, one
// prefixed entry) and what the page may read back (etag, x-ms-request-id, …). CORS only tells the
// browser what it may do: every request still needs its SAS, since the account has no public
// access and no shared key.
var blobCorsRules = empty(corsOrigins) ? [] : [
  {
    allowedOrigins: corsOrigins
    allowedMethods: [
      'PUT'
      'GET'
      'HEAD'
      'OPTIONS'
    ]
    allowedHeaders: [
      'x-ms-*'
      'content-type'
      'content-length'
    ]
    exposedHeaders: [
      'etag'
      'x-ms-*'
    ]
    maxAgeInSeconds: 3600
  }
]

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    cors: {
      corsRules: blobCorsRules
    }
  }
}

var containerNames = [
  uploadContainer
  derivedContainer
  claimsContainer
  publishedContainer
  deploymentContainer
  deadLetterContainer
]

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in containerNames: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in queueNames: {
    parent: queueService
    name: queue
  }
]

// The table service: the Functions host's own tables (AzureFunctionsDiagnosticEvents*, created
// by the host) and the API's rate-limit table.
resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for table in tableNames: {
    parent: tableService
    name: table
  }
]

// One delete rule per retention class; a class with 0 days gets no rule (kept forever).
var retentionClasses = [
  {
    rule: 'expire-originals'
    days: retainOriginalsDays
    prefixes: [
      '${uploadContainer}/'
    ]
  }
  {
    rule: 'expire-derived'
    days: retainDerivedDays
    prefixes: [
      '${derivedContainer}/'
      '${publishedContainer}/'
    ]
  }
  {
    rule: 'expire-claim-checks'
    days: retainClaimsDays
    prefixes: [
      '${claimsContainer}/'
    ]
  }
  {
    rule: 'expire-dead-letters'
    days: retainDeadLetterDays
    prefixes: [
      '${deadLetterContainer}/'
    ]
  }
]

var lifecycleRules = map(filter(retentionClasses, c => c.days > 0), c => {
  name: c.rule
  enabled: true
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: c.prefixes
    }
    actions: {
      baseBlob: {
        delete: {
          daysAfterModificationGreaterThan: c.days
        }
      }
    }
  }
})

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(lifecycleRules)) {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: lifecycleRules
    }
  }
  dependsOn: [
    containers
  ]
}

output id string = account.id
output name string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
