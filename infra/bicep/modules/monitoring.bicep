// Log Analytics workspace + workspace-based Application Insights with local (key) auth disabled:
// the app publishes telemetry with its managed identity (Monitoring Metrics Publisher, see
// roles.bicep) via APPLICATIONINSIGHTS_AUTHENTICATION_STRING.

param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object = {}

@description('Days Log Analytics keeps logs (30 is the free retention of the PerGB2018 tier).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

@description('Daily ingestion cap in GB (-1 = none): a guard against a log storm on a large backfill.')
param dailyQuotaGb int = -1

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

output applicationInsightsId string = appInsights.id
output applicationInsightsName string = appInsights.name
// Not a secret: with DisableLocalAuth the ingestion endpoint accepts Entra ID tokens only.
output connectionString string = appInsights.properties.ConnectionString
output logAnalyticsId string = workspace.id
