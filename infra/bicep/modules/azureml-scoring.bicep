// Lets the app's identity score on the online endpoints of one Azure Machine Learning workspace
// (model steps with AZUREML_URL and no key, docs/models.md), and nothing else: the built-in
// AzureML Data Scientist role would also let it create, change and delete endpoints and list
// their keys. The action is the one Microsoft's "Authenticate clients for online endpoints"
// names for scoring with a Microsoft Entra token.
targetScope = 'resourceGroup'

@description('The workspace (in this resource group) whose online endpoints the app calls.')
param workspaceName string

@description('The principal id of the app\'s user-assigned identity.')
param principalId string

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource scorer 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(workspace.id, 'darkroom-online-endpoint-scorer')
  properties: {
    roleName: 'Darkroom online endpoint scorer (${workspaceName}, ${guid(workspace.id)})'
    description: 'Send scoring requests to the online endpoints of one Azure Machine Learning workspace.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.MachineLearningServices/workspaces/onlineEndpoints/score/action'
        ]
        notActions: []
      }
    ]
    assignableScopes: [
      workspace.id
    ]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, scorer.id)
  scope: workspace
  properties: {
    roleDefinitionId: scorer.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
