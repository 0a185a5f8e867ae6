// Every permission the app's user-assigned identity holds, and nothing more, each at the
// narrowest scope that works; its roles on the optional Azure AI services accounts (Vision,
// Document Intelligence, Face, Azure OpenAI) come with each account (cognitive-account.bicep). Optionally the same data rights for the deploying user, so the
// operator CLI (`python -m pipeline status|show|poison …`) works from a laptop after `az login`.
//
// Built-in role definition ids (looked up in Azure's built-in roles list, not guessed):
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7' // EventGrid Data Sender
// Cosmos DB data plane roles are not ARM roles: this is the account-local built-in definition
// "Cosmos DB Built-in Data Contributor", assigned with a sqlRoleAssignment below.
var cosmosDataContributor = '00000000-0000-0000-0000-000000000002'

@description('Principal (object) id of the app\'s user-assigned managed identity.')
param identityPrincipalId string
param storageAccountName string
param applicationInsightsName string
param cosmosAccountName string

@description('Event Grid custom topic for completion events to grant EventGrid Data Sender on; empty = none.')
param eventsTopicName string = ''

@description('Object id of a person or CI principal that also gets the data roles; empty = nobody.')
param userPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource eventsTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = if (!empty(eventsTopicName)) {
  name: eventsTopicName
}

// Storage: blobs (originals, derived, claims, published, the Flex package), queues, tables.
// - The API's upload and read URLs are user-delegation SAS (the account has no key). Getting the
//   delegation key needs Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action,
//   which Storage Blob Data Owner already includes (as do Blob Data Contributor and Reader), so
//   no Storage Blob Delegator (db58b8e5-c6ad-4a2a-8342-4190687cbf4a, that action alone) is
//   assigned. A SAS can grant no more than its signer holds: Owner on the account covers the
//   upload container (create/write) and derived/published (read).
// - Table Data Contributor on the account, not on the rate-limit table alone: the Functions host
//   creates and writes its own tables (AzureFunctionsDiagnosticEvents<yyyyMM>, a new one each
//   month) through AzureWebJobsStorage__tableServiceUri, and the app reads and writes entities of
//   DARKROOM_LIMITS_TABLE through DARKROOM_STORAGE__tableServiceUri.
var storageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in storageRoles: {
    name: guid(storage.id, identityPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: identityPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identityPrincipalId, monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appCosmosData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, identityPrincipalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: identityPrincipalId
    scope: cosmos.id
  }
}

resource appEventsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(eventsTopicName)) {
  name: guid(resourceGroup().id, eventsTopicName, identityPrincipalId, eventGridDataSender)
  scope: eventsTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The operator: the same storage data roles and Cosmos data access.
var userStorageRoles = empty(userPrincipalId) ? [] : [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

resource userStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in userStorageRoles: {
    name: guid(storage.id, userPrincipalId, role)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: userPrincipalId
      principalType: userPrincipalType
    }
  }
]

resource userCosmosData 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = if (!empty(userPrincipalId)) {
  parent: cosmos
  name: guid(cosmos.id, userPrincipalId, cosmosDataContributor)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributor}'
    principalId: userPrincipalId
    scope: cosmos.id
  }
  dependsOn: [
    appCosmosData // Cosmos applies SQL role assignments one at a time
  ]
}
