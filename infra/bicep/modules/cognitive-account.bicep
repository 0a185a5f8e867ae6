// One Azure AI services account (Microsoft.CognitiveServices/accounts) the app calls with its
// managed identity, and that identity's roles on it: Azure AI Vision (kind ComputerVision),
// Document Intelligence (FormRecognizer), Face, or a Foundry resource (AIServices) holding Azure
// OpenAI model deployments. main.bicep deploys one per service that is switched on.
//
// - Keys are disabled (disableLocalAuth): only Entra ID tokens are accepted, so no key exists to
//   leak or rotate and only the endpoint reaches the app (DARKROOM_*_ENDPOINT).
// - A custom subdomain is what makes token authentication possible; it is the account name.
// - Model deployments (AIServices only) are created one at a time (@batchSize(1)): the service
//   refuses a second deployment change on an account while one is in progress.
// - The role assignments' names are guid(resource group, account, principal, role): the same
//   names roles.bicep used for the Vision account before this module existed, so an existing
//   deployment keeps its assignment.

param name string
param location string
param tags object = {}

@allowed([
  'ComputerVision'
  'FormRecognizer'
  'Face'
  'AIServices'
])
param kind string

@description('S0/S1 (ComputerVision: S1) for real traffic; F0 is free but throttled (about 20 calls a minute) and one per subscription and kind.')
param skuName string = 'S0'

@description('Model deployments (kind AIServices): [{name, model, version, sku, capacity}]; sku e.g. GlobalStandard, capacity in thousands of tokens per minute.')
param deployments array = []

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Built-in role definition ids the identity gets on this account.')
param roleDefinitionIds array

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' = {
  name: name
  location: location
  tags: tags
  kind: kind
  sku: {
    name: skuName
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

@batchSize(1)
resource modelDeployments 'Microsoft.CognitiveServices/accounts/deployments@2025-06-01' = [
  for d in deployments: {
    parent: account
    name: d.name
    sku: {
      name: d.sku
      capacity: d.capacity
    }
    properties: {
      model: {
        format: 'OpenAI'
        name: d.model
        version: d.version
      }
      // Pinned: the app records the model that answered (DARKROOM_OPENAI_MODEL until the first
      // answer), so a version changes only when you change it here, or when Azure retires it
      // (then the deployment moves to the default version instead of failing every call).
      versionUpgradeOption: 'OnceCurrentVersionExpired'
    }
  }
]

resource roles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in roleDefinitionIds: {
    name: guid(resourceGroup().id, name, principalId, role)
    scope: account
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
      principalId: principalId
      principalType: 'ServicePrincipal'
    }
  }
]

output name string = account.name
output endpoint string = account.properties.endpoint
