// Cosmos DB for NoSQL, serverless (pay per request unit, nothing when idle), keys disabled: the
// app's identity gets the built-in Data Contributor as a Cosmos SQL role assignment (roles.bicep).
// The identity holds data-plane rights only, so the database and container are created here.

param name string
param location string
param tags object = {}
param databaseName string
param containerName string

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    disableLocalAuth: true
    // Control-plane writes (databases, containers) only through ARM, never with a data key.
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource images 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      // One document per image, id = hash of container/name: point reads and upserts by id.
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        // Large free-form subtrees are never filtered on; not indexing them saves write RUs.
        excludedPaths: [
          {
            path: '/analysis/text/*'
          }
          {
            path: '/analysis/faces/*'
          }
          {
            path: '/exif/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
      }
    }
  }
}

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
