// Optional Event Grid custom topic for completion events (`Darkroom.ImageProcessed`, Event Grid
// schema, sent by pipeline/engine/notify.py). Keys are disabled: the app publishes with its managed
// identity (EventGrid Data Sender, roles.bicep), so only DARKROOM_EVENTGRID_TOPIC_ENDPOINT is set.

param name string
param location string
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
