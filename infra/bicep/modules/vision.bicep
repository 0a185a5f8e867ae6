// Optional Azure AI Vision (Image Analysis 4.0) account. Keys are disabled: the app calls it with
// its managed identity (Cognitive Services User, roles.bicep), so only the endpoint is passed on
// (DARKROOM_AZURE_VISION_ENDPOINT) and DARKROOM_AZURE_VISION_KEY stays unset.

param name string
param location string
param tags object = {}

@description('F0 is free but limited (20 calls/min, 5,000/month, one per subscription); S1 for real traffic.')
@allowed([
  'F0'
  'S1'
])
param skuName string = 'S1'

resource vision 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'ComputerVision'
  sku: {
    name: skuName
  }
  properties: {
    // A custom subdomain is what makes Entra ID (token) authentication possible.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = vision.name
output endpoint string = vision.properties.endpoint
