// Darkroom on Azure: everything `azd up` (or `az deployment group create`) provisions in one
// resource group. Names, region, sizes and the pipeline's own knobs are parameters; the same
// values go to the resources (containers, queues, lifecycle rules) and to the app settings, so
// the two cannot drift apart. The Event Grid subscription is not here: it needs the function's
// blobs_extension key, which exists only after code deploy (modules/eventgrid-subscription.bicep,
// deployed by scripts/azd/postdeploy.*).
targetScope = 'resourceGroup'

// ---------------------------------------------------------------- environment and names
@minLength(1)
@maxLength(64)
@description('Environment name (azd: AZURE_ENV_NAME); seeds the unique resource names.')
param environmentName string

@description('Region for every resource (must offer Flex Consumption; azd: AZURE_LOCATION).')
param location string = resourceGroup().location

@description('Object id of the deploying person or CI principal that also gets data access (azd: AZURE_PRINCIPAL_ID); empty = nobody.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Optional explicit names; empty = derived from the environment.')
param functionAppName string = ''
param storageAccountName string = ''
param cosmosAccountName string = ''

// ---------------------------------------------------------------- sizes
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

@allowed([
  512
  2048
  4096
])
@description('Flex instance memory in MB; see modules/function-app.bicep for why 2048.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// ---------------------------------------------------------------- the pipeline
@description('PIPELINE_STEPS: the route, step names or module paths, comma-separated.')
param pipelineSteps string = 'prepare,analyze,recognize,transform,store'

@description('Steps that get queues although the route skips them (the app registers every built-in step); comma-separated.')
param additionalListenerSteps string = ''

@description('DARKROOM_QUEUE_PREFIX: queue of step s is <prefix>s.')
param queuePrefix string = 'darkroom-'

@description('DARKROOM_SWEEP_SCHEDULE: NCRONTAB schedule of the stall sweep (sweep_stalled), which resumes images whose message was lost.')
param sweepSchedule string = '0 */2 * * * *'

@description('DARKROOM_STALL_SECONDS: an image waiting this long on a queue with nothing older in it is resumed from its document; keep it above functionTimeout (10 min).')
@minValue(60)
param stallSeconds int = 900

@description('DARKROOM_RESULTS_QUEUE: completion events go to <prefix><resultsQueue>.')
param resultsQueue string = 'results'

param uploadContainer string = 'uploads'
param derivedContainer string = 'derived'
param claimsContainer string = 'claims'
param publishedContainer string = 'published'

@description('Where Event Grid puts BlobCreated events it could not deliver to ingest.')
param deadLetterContainer string = 'eventgrid-deadletter'

param cosmosDatabaseName string = 'darkroom'
param cosmosContainerName string = 'images'

// Face recognition (the recognize step, /api/people): the faces store, two vector-searched
// containers in the same database (modules/cosmos.bicep enables vector search on the account).
@description('DARKROOM_FACES_CONTAINER: one document per detected face, with its embedding (vector index on /embedding).')
param facesContainerName string = 'faces'

@description('DARKROOM_PEOPLE_CONTAINER: one document per person (vector index on /template).')
param peopleContainerName string = 'people'

// Retention: the lifecycle rules use these, and the app is told the same numbers.
@description('DARKROOM_RETAIN_ORIGINALS_DAYS: uploads are deleted this many days after upload (0 = never).')
@minValue(0)
param retainOriginalsDays int = 30

@description('DARKROOM_RETAIN_DERIVED_DAYS: derived and published blobs are deleted after this many days (0 = never).')
@minValue(0)
param retainDerivedDays int = 365

@description('DARKROOM_RETAIN_CLAIMS_DAYS: claim-check blobs are needed only while their message is in flight (longest: a poison replay); 0 = never.')
@minValue(0)
param retainClaimsDays int = 7

@minValue(0)
param retainDeadLetterDays int = 30

@description('Model steps (docs/models.md): each step\'s settings without their DARKROOM_MODEL_<NAME>__ prefix, e.g. {"defects": {"TASK": "detect", "ONNX": "models/defects.onnx"}}; name the step in pipelineSteps too. An embedding step (TASK embed) needs DIMENSIONS here: its vector container is made with them. Keys go in modelStepSecrets.')
param modelSteps object = {}

@secure()
@description('Model step keys, the same shape ({"parts": {"AZUREML_KEY": "…"}}): set as app settings from this secure parameter only. Prefer the identity (azureMlWorkspaceIds).')
param modelStepSecrets object = {}

@description('Resource ids of Azure Machine Learning workspaces whose online endpoints model steps call with the app\'s identity (an Entra token, no key): the identity gets a custom role there with the one scoring action.')
param azureMlWorkspaceIds array = []

@description('DARKROOM_ANALYZERS: capabilities the analyze step runs.')
param analyzers string = 'faces,objects,tags,text,moderation'

@description('Capabilities answered by Azure AI Vision instead of the offline model (DARKROOM_<CAP>_PROVIDER=azure), e.g. "text,objects". Any entry deploys the Vision account.')
param azureVisionCapabilities string = ''

@description('Deploy Azure AI Vision even when no capability uses it yet.')
param enableAzureVision bool = false

@allowed([
  'F0'
  'S1'
])
param visionSkuName string = 'S1'

@description('Vision region (caption and dense captions exist only in some regions).')
param visionLocation string = location

@description('Who answers a capability instead of the offline model: capability=provider pairs, comma-separated (DARKROOM_<CAPABILITY>_PROVIDER), e.g. "text=docintel,faces=face,caption=openai,tags=openai". Naming a provider deploys its service: azure (Azure AI Vision), docintel (Document Intelligence), face (Face), openai (Azure OpenAI). Wins over azureVisionCapabilities.')
param analyzerProviders string = ''

// ---------------------------------------------------------------- Azure AI services (docs/deploy.md)
// Each is off unless switched on here or named in analyzerProviders; each is a keyless account
// the app's identity calls with a role on that account only (modules/cognitive-account.bicep).
@description('Deploy a Foundry (AIServices) account with a GPT vision chat deployment (DARKROOM_OPENAI_*) even when no capability uses it yet.')
param enableOpenAi bool = false

@description('Azure OpenAI region, empty = location: the model must be offered there with openAiSkuName, and the subscription needs quota for it.')
param openAiLocation string = ''

@description('GPT model with image input for caption, tags, objects and text (a Microsoft Foundry model name); its deployment has the same name.')
param openAiModelName string = 'gpt-5.4-mini'

@description('Model version; recorded with the name as the model identity (DARKROOM_OPENAI_MODEL, name@version).')
param openAiModelVersion string = '2026-03-17'

@description('Deployment type: GlobalStandard (any region\'s capacity, highest default quota), DataZoneStandard (EU or US data zone) or Standard (this region only).')
@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param openAiSkuName string = 'GlobalStandard'

@description('Rate limit of the chat deployment in thousands of tokens per minute (an image is about 1-2k tokens with detail high); drawn from the subscription\'s quota.')
@minValue(1)
param openAiCapacity int = 50

@description('Also deploy a text embedding model (DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT); text-embedding-3-small returns 1536 dimensions.')
param enableOpenAiEmbeddings bool = false

param openAiEmbeddingModelName string = 'text-embedding-3-small'
param openAiEmbeddingModelVersion string = '1'

@allowed([
  'GlobalStandard'
  'DataZoneStandard'
  'Standard'
])
param openAiEmbeddingSkuName string = 'GlobalStandard'

@minValue(1)
param openAiEmbeddingCapacity int = 50

@description('DARKROOM_OPENAI_EMBEDDING_DIMENSIONS: length of a caption\'s vector; with enableOpenAiEmbeddings, the images container\'s vector policy is created with it (a vector policy is fixed when the container is created: docs/deploy.md, Search); text-embedding-3 models shorten to any length up to theirs.')
@minValue(16)
@maxValue(4096)
param openAiEmbeddingDimensions int = 1536

@description('Deploy Azure AI Document Intelligence (prebuilt-read OCR for DARKROOM_TEXT_PROVIDER=docintel) even when no capability uses it yet.')
param enableDocIntel bool = false

@description('Document Intelligence region, empty = location.')
param docIntelLocation string = ''

@allowed([
  'F0'
  'S0'
])
param docIntelSkuName string = 'S0'

@description('Deploy the Azure AI Face service (detection for DARKROOM_FACES_PROVIDER=face) even when no capability uses it yet.')
param enableFace bool = false

@description('Face region, empty = location.')
param faceLocation string = ''

@allowed([
  'F0'
  'S0'
])
param faceSkuName string = 'S0'

@description('Deploy an Event Grid custom topic for completion events (DARKROOM_EVENTGRID_TOPIC_ENDPOINT).')
param enableEventsTopic bool = false

@description('More app settings (tuning knobs such as DARKROOM_MAX_PIXELS); never secrets.')
param additionalAppSettings object = {}

// ---------------------------------------------------------------- the HTTP API (web page and mobile apps)
@description('Origins (scheme://host[:port]) of web pages that call /api/* and upload straight to blob storage; empty = only the app\'s own https://<app>.azurewebsites.net, where it serves its page at /.')
@maxLength(64)
param corsOrigins array = []

@description('DARKROOM_LIMITS_TABLE: table of the per-caller rate limits (token buckets, daily counters); 3-63 letters and digits.')
@minLength(3)
@maxLength(63)
param limitsTable string = 'darkroomlimits'

@description('DARKROOM_ENTRA_TENANT_ID: tenant whose Entra ID access tokens the API accepts; empty = Entra sign-in off (API keys only). Give it together with entraAudience.')
param entraTenantId string = ''

@description('DARKROOM_ENTRA_AUDIENCE: accepted token audience(s), comma-separated (the API app registration\'s client id and/or its api://… URI); empty = Entra sign-in off.')
param entraAudience string = ''

// DARKROOM_API_KEYS / DARKROOM_ADMIN_KEYS are secret settings (`NAME:sha256hex` entries, comma-
// separated, printed by `python -m pipeline keys add NAME`; only hashes, never the keys). They
// are @secure() parameters with an empty default rather than settings left out of Bicep: the
// appsettings resource (modules/function-app.bicep) is the whole collection, so a value set by
// hand with `az functionapp config appsettings set` would be deleted by the next provision and
// lock every API caller out. @secure() keeps them out of the deployment history and logs, they
// reach the module through a @secure() object parameter for the same reason, no output returns
// them, and an empty value (the default) sets no setting at all (no API keys: Entra ID only, or
// no callers).
@secure()
@description('DARKROOM_API_KEYS: NAME:sha256hex entries, comma-separated (`python -m pipeline keys add NAME`); empty = no API keys.')
param apiKeys string = ''

@secure()
@description('DARKROOM_ADMIN_KEYS: NAME:sha256hex entries for admin callers, comma-separated; empty = none.')
param adminKeys string = ''

// ---------------------------------------------------------------- SLO and drift alerts (modules/alerts.bicep)
@description('Deploy the SLO and model-drift alert rules (log search alerts on the Log Analytics workspace).')
param enableAlerts bool = true

@description('E-mail address the alerts are sent to (an action group); empty = no notification, the alerts show in the portal only.')
param alertEmail string = ''

@description('Success rate SLO over an hour: done / (done + failed), as a decimal string.')
param sloSuccessRate string = '0.99'

@description('End-to-end latency SLO: p95 of ingest to done over an hour, milliseconds.')
param sloP95LatencyMs int = 120000

@description('Oldest visible message a step queue may hold, seconds.')
param sloQueueAgeSeconds int = 900

@description('DARKROOM_DRIFT_WINDOW_HOURS, for the app (`status`) and the drift alert alike: the latest window; its baseline is the rest of 48 h.')
@minValue(1)
@maxValue(24)
param driftWindowHours int = 12

// ---------------------------------------------------------------- derived values
var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'darkroom'
}
var appName = empty(functionAppName) ? 'func-darkroom-${resourceToken}' : functionAppName
var stName = empty(storageAccountName) ? 'stdarkroom${take(resourceToken, 12)}' : storageAccountName
var cosmosName = empty(cosmosAccountName) ? 'cosmos-darkroom-${resourceToken}' : cosmosAccountName
var deploymentContainer = 'app-package-${resourceToken}'
var visionName = 'cv-darkroom-${resourceToken}'
var docIntelName = 'di-darkroom-${resourceToken}'
var faceName = 'face-darkroom-${resourceToken}'
var openAiName = 'oai-darkroom-${resourceToken}'
var eventsTopicName = 'evgt-darkroom-${resourceToken}'

// Queue names exactly as pipeline/settings.py derives them: a step's name is the last part of
// its module path, `_` becomes `-`; lanes live and backfill; each queue has its -poison twin.
var routeSpecs = filter(map(split(pipelineSteps, ','), s => trim(s)), s => !empty(s))
var extraSpecs = filter(map(split(additionalListenerSteps, ','), s => trim(s)), s => !empty(s))
var stepQueueNames = union(map(routeSpecs, s => replace(last(split(s, '.')), '_', '-')), map(extraSpecs, s => replace(last(split(s, '.')), '_', '-')))
var laneSuffixes = [
  ''
  '-backfill'
]
var stepQueues = flatten(map(stepQueueNames, s => map(laneSuffixes, lane => '${queuePrefix}${s}${lane}')))
var queueNames = union(stepQueues, map(stepQueues, q => '${q}-poison'), [
  '${queuePrefix}${resultsQueue}'
])

// CORS: the same origins for the blob service (browser PUT/GET with the API's SAS URLs) and the
// site (pages on other origins calling /api/*). The default origin is the app's default host
// name, built from its name because the storage account is deployed before the app exists; an
// app with a custom domain or a region-unique default host name passes corsOrigins instead.
var apiOrigins = empty(corsOrigins) ? [
  'https://${appName}.azurewebsites.net'
] : corsOrigins

var analyzerList = filter(map(split(analyzers, ','), c => toLower(trim(c))), c => !empty(c))
var azureCapabilities = filter(map(split(azureVisionCapabilities, ','), c => toLower(trim(c))), c => !empty(c))
// analyzerProviders as {capability: provider}; the providers named there deploy their service.
var providerPairs = filter(map(split(analyzerProviders, ','), p => trim(p)), p => !empty(p))
var providerOverrides = toObject(providerPairs, p => toLower(trim(first(split(p, '=')))), p => toLower(trim(last(split(p, '=')))))
var providerNames = map(items(providerOverrides), p => p.value)
var deployVision = enableAzureVision || contains(providerNames, 'azure') || !empty(azureCapabilities)
var deployDocIntel = enableDocIntel || contains(providerNames, 'docintel')
var deployFace = enableFace || contains(providerNames, 'face')
var deployOpenAi = enableOpenAi || enableOpenAiEmbeddings || contains(providerNames, 'openai')
// Built-in roles on the AI services accounts (learn.microsoft.com/azure/role-based-access-control/
// built-in-roles/ai-machine-learning), each the narrowest that lets the app call its service:
var cognitiveServicesUser = 'a97b65f3-24c7-4388-baec-2e87135dc908' // Cognitive Services User: Vision, Document Intelligence, Face
var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd' // Cognitive Services OpenAI User: inference on the deployments, no keys, no deployment changes
var openAiDeployments = concat([
  {
    name: openAiModelName
    model: openAiModelName
    version: openAiModelVersion
    sku: openAiSkuName
    capacity: openAiCapacity
  }
], enableOpenAiEmbeddings ? [
  {
    name: openAiEmbeddingModelName
    model: openAiEmbeddingModelName
    version: openAiEmbeddingModelVersion
    sku: openAiEmbeddingSkuName
    capacity: openAiEmbeddingCapacity
  }
] : [])
// The drift check's windows, the same in the app and in modules/alerts.bicep (which derives the
// baseline the same way): the latest window and the rest of the 48 h a log search alert queries.
var driftBaselineHours = 48 - driftWindowHours
// Model steps: DARKROOM_MODEL_<NAME>__<KEY> app settings, and a vector container per embedding step
// (partition /owner, cosine on /vector: pipeline/stores/embeddings.py ensure_container).
var modelStepSettings = toObject(flatten(map(items(modelSteps), step => map(items(step.value), s => {
  name: 'DARKROOM_MODEL_${toUpper(step.key)}__${toUpper(s.key)}'
  value: string(s.value)
}))), e => e.name, e => e.value)
var modelStepSecretSettings = toObject(flatten(map(items(modelStepSecrets), step => map(items(step.value), s => {
  name: 'DARKROOM_MODEL_${toUpper(step.key)}__${toUpper(s.key)}'
  value: string(s.value)
}))), e => e.name, e => e.value)
var embeddingContainers = map(filter(items(modelSteps), s => toLower(string(s.value.TASK)) == 'embed'), s => {
  name: contains(s.value, 'CONTAINER') ? s.value.CONTAINER : 'embeddings-${toLower(s.key)}'
  dimensions: int(s.value.DIMENSIONS)
})

// ---------------------------------------------------------------- resources
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-darkroom-${resourceToken}'
  location: location
  tags: tags
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: stName
    location: location
    tags: tags
    skuName: storageSkuName
    uploadContainer: uploadContainer
    derivedContainer: derivedContainer
    claimsContainer: claimsContainer
    publishedContainer: publishedContainer
    deploymentContainer: deploymentContainer
    deadLetterContainer: deadLetterContainer
    queueNames: queueNames
    tableNames: [
      limitsTable
    ]
    retainOriginalsDays: retainOriginalsDays
    retainDerivedDays: retainDerivedDays
    retainClaimsDays: retainClaimsDays
    retainDeadLetterDays: retainDeadLetterDays
    corsOrigins: apiOrigins
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: 'log-darkroom-${resourceToken}'
    applicationInsightsName: 'appi-darkroom-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module alerts 'modules/alerts.bicep' = if (enableAlerts) {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    workspaceId: monitoring.outputs.logAnalyticsId
    namePrefix: 'darkroom-${resourceToken}'
    alertEmail: alertEmail
    successRateTarget: sloSuccessRate
    p95LatencyMs: sloP95LatencyMs
    queueAgeSeconds: sloQueueAgeSeconds
    driftWindowHours: driftWindowHours
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    name: cosmosName
    location: location
    tags: tags
    databaseName: cosmosDatabaseName
    containerName: cosmosContainerName
    facesContainerName: facesContainerName
    peopleContainerName: peopleContainerName
    embeddingContainers: embeddingContainers
    // 0: no vector policy on the images container (an existing container cannot get one)
    searchVectorDimensions: enableOpenAiEmbeddings ? openAiEmbeddingDimensions : 0
  }
}

// The scoring action of Azure ML online endpoints, and nothing else, for the app's identity.
module azureMlScoring 'modules/azureml-scoring.bicep' = [
  for (workspaceId, i) in azureMlWorkspaceIds: {
    name: 'azureml-scoring-${i}'
    scope: resourceGroup(split(workspaceId, '/')[2], split(workspaceId, '/')[4])
    params: {
      workspaceName: last(split(workspaceId, '/'))
      principalId: identity.properties.principalId
    }
  }
]

// Azure AI services, each with the app identity's role on it (modules/cognitive-account.bicep).
module vision 'modules/cognitive-account.bicep' = if (deployVision) {
  name: 'vision'
  params: {
    name: visionName
    location: visionLocation
    tags: tags
    kind: 'ComputerVision'
    skuName: visionSkuName
    principalId: identity.properties.principalId
    roleDefinitionIds: [
      cognitiveServicesUser
    ]
  }
}

module docIntel 'modules/cognitive-account.bicep' = if (deployDocIntel) {
  name: 'docintel'
  params: {
    name: docIntelName
    location: empty(docIntelLocation) ? location : docIntelLocation
    tags: tags
    kind: 'FormRecognizer'
    skuName: docIntelSkuName
    principalId: identity.properties.principalId
    roleDefinitionIds: [
      cognitiveServicesUser
    ]
  }
}

module faceApi 'modules/cognitive-account.bicep' = if (deployFace) {
  name: 'face'
  params: {
    name: faceName
    location: empty(faceLocation) ? location : faceLocation
    tags: tags
    kind: 'Face'
    skuName: faceSkuName
    principalId: identity.properties.principalId
    roleDefinitionIds: [
      cognitiveServicesUser
    ]
  }
}

// A Foundry resource (kind AIServices) rather than a classic Azure OpenAI one (kind OpenAI): it
// is where Microsoft deploys current models, it serves the same Azure OpenAI REST API
// (/openai/deployments/<name>/chat/completions) at its endpoint with the same Entra role, and
// Microsoft upgrades classic Azure OpenAI accounts to it anyway, so a template saying 'OpenAI'
// would fight that upgrade on every provision.
module openAi 'modules/cognitive-account.bicep' = if (deployOpenAi) {
  name: 'openai'
  params: {
    name: openAiName
    location: empty(openAiLocation) ? location : openAiLocation
    tags: tags
    kind: 'AIServices'
    skuName: 'S0'
    deployments: openAiDeployments
    principalId: identity.properties.principalId
    roleDefinitionIds: [
      cognitiveServicesOpenAiUser
    ]
  }
}

module eventsTopic 'modules/events-topic.bicep' = if (enableEventsTopic) {
  name: 'events-topic'
  params: {
    name: eventsTopicName
    location: location
    tags: tags
  }
}

module systemTopic 'modules/eventgrid-system-topic.bicep' = {
  name: 'eventgrid-system-topic'
  params: {
    name: 'evgst-darkroom-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainer: deadLetterContainer
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    identityPrincipalId: identity.properties.principalId
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    cosmosAccountName: cosmos.outputs.name
    eventsTopicName: enableEventsTopic ? eventsTopicName : ''
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
  dependsOn: [
    eventsTopic
  ]
}

// The app's own settings; the module adds the identity-based connections. The settings used
// as %SETTING% binding expressions in function_app.py (PIPELINE_STEPS feeds the step
// registration, DARKROOM_QUEUE_PREFIX and DARKROOM_UPLOAD_CONTAINER the trigger paths,
// DARKROOM_SWEEP_SCHEDULE the timer) must be set: the real host resolves them before any of
// our code runs.
var coreSettings = {
  PIPELINE_STEPS: join(routeSpecs, ',')
  DARKROOM_QUEUE_PREFIX: queuePrefix
  DARKROOM_UPLOAD_CONTAINER: uploadContainer
  DARKROOM_SWEEP_SCHEDULE: sweepSchedule
  DARKROOM_STALL_SECONDS: string(stallSeconds)
  DARKROOM_DERIVED_CONTAINER: derivedContainer
  DARKROOM_CLAIMS_CONTAINER: claimsContainer
  DARKROOM_PUBLISHED_CONTAINER: publishedContainer
  DARKROOM_RESULTS_QUEUE: resultsQueue
  DARKROOM_COSMOS_DATABASE: cosmosDatabaseName
  DARKROOM_COSMOS_CONTAINER: cosmosContainerName
  // Bicep creates these two containers, so the app is told their names.
  DARKROOM_FACES_CONTAINER: facesContainerName
  DARKROOM_PEOPLE_CONTAINER: peopleContainerName
  DARKROOM_RETAIN_ORIGINALS_DAYS: string(retainOriginalsDays)
  DARKROOM_RETAIN_DERIVED_DAYS: string(retainDerivedDays)
  DARKROOM_RETAIN_CLAIMS_DAYS: string(retainClaimsDays)
  DARKROOM_ANALYZERS: join(analyzerList, ',')
  DARKROOM_DRIFT_WINDOW_HOURS: string(driftWindowHours)
  DARKROOM_DRIFT_BASELINE_HOURS: string(driftBaselineHours)
}
var providerSettings = toObject(analyzerList, c => 'DARKROOM_${toUpper(c)}_PROVIDER', c => contains(providerOverrides, c) ? providerOverrides[c] : (contains(azureCapabilities, c) ? 'azure' : 'local'))
// Endpoints only: the identity authenticates, so no DARKROOM_*_KEY setting for any service.
var visionSettings = deployVision ? {
  DARKROOM_AZURE_VISION_ENDPOINT: vision.outputs.endpoint
} : {}
var docIntelSettings = deployDocIntel ? {
  DARKROOM_DOCINTEL_ENDPOINT: docIntel.outputs.endpoint
} : {}
var faceSettings = deployFace ? {
  DARKROOM_FACE_ENDPOINT: faceApi.outputs.endpoint
} : {}
var openAiChatSettings = deployOpenAi ? {
  DARKROOM_OPENAI_ENDPOINT: openAi.outputs.endpoint
  DARKROOM_OPENAI_DEPLOYMENT: openAiModelName
  // the model identity the app records until the service names the model that answered
  DARKROOM_OPENAI_MODEL: '${openAiModelName}@${openAiModelVersion}'
} : {}
var openAiEmbeddingSettings = enableOpenAiEmbeddings ? {
  DARKROOM_OPENAI_EMBEDDING_DEPLOYMENT: openAiEmbeddingModelName
  DARKROOM_OPENAI_EMBEDDING_DIMENSIONS: string(openAiEmbeddingDimensions)
} : {}
var eventsSettings = enableEventsTopic ? {
  DARKROOM_EVENTGRID_TOPIC_ENDPOINT: eventsTopic.outputs.endpoint
} : {}
// The HTTP API. The other API settings (URL lifetimes, rates, daily quota, sync path, Entra
// authority and admin role) have usable defaults in the code; set them with additionalAppSettings.
var apiSettings = {
  DARKROOM_CORS_ORIGINS: join(apiOrigins, ',')
  DARKROOM_LIMITS_TABLE: limitsTable
}
// Entra ID sign-in: only what is given (the app reports a tenant without an audience, or the
// reverse, on /api/health). No App Service authentication (authsettingsV2) is declared: the app
// validates every bearer token itself (signature against the tenant's JWKS, issuer, audience,
// expiry) and API keys must keep working on the same routes, so the platform layer could only
// run with requireAuthentication false / AllowAnonymous and would reject nothing; its
// X-MS-CLIENT-PRINCIPAL headers are not used, because code that trusted them would be unsafe the
// day the platform layer is switched off (clients can send those headers themselves then).
var entraTenantSettings = empty(entraTenantId) ? {} : {
  DARKROOM_ENTRA_TENANT_ID: entraTenantId
}
var entraAudienceSettings = empty(entraAudience) ? {} : {
  DARKROOM_ENTRA_AUDIENCE: entraAudience
}
// Secret: only ever passed to the module's @secure() secretSettings (see apiKeys above).
var apiKeySettings = empty(apiKeys) ? {} : {
  DARKROOM_API_KEYS: apiKeys
}
var adminKeySettings = empty(adminKeys) ? {} : {
  DARKROOM_ADMIN_KEYS: adminKeys
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    name: appName
    planName: 'plan-darkroom-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    deploymentContainer: deploymentContainer
    cosmosEndpoint: cosmos.outputs.endpoint
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    pipelineSettings: union(additionalAppSettings, coreSettings, providerSettings, visionSettings, docIntelSettings, faceSettings, openAiChatSettings, openAiEmbeddingSettings, eventsSettings, apiSettings, entraTenantSettings, entraAudienceSettings, modelStepSettings)
    secretSettings: union(apiKeySettings, adminKeySettings, modelStepSecretSettings)
    corsOrigins: apiOrigins
  }
  // The host starts as soon as the app exists: its identity must already hold its roles.
  dependsOn: [
    roles
  ]
}

// ---------------------------------------------------------------- outputs (azd writes them to .azure/<env>/.env)
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// scripts/azd/postprovision.* probes it to see that the new data roles are in effect
output AZURE_DEPLOYMENT_CONTAINER string = deploymentContainer
output AZURE_COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENTGRID_SYSTEM_TOPIC_NAME string = systemTopic.outputs.name
output EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainer
output AZURE_VISION_ENDPOINT string = deployVision ? vision.outputs.endpoint : ''
output AZURE_DOCINTEL_ENDPOINT string = deployDocIntel ? docIntel.outputs.endpoint : ''
output AZURE_FACE_ENDPOINT string = deployFace ? faceApi.outputs.endpoint : ''
output AZURE_OPENAI_ENDPOINT string = deployOpenAi ? openAi.outputs.endpoint : ''
output EVENTGRID_TOPIC_ENDPOINT string = enableEventsTopic ? eventsTopic.outputs.endpoint : ''
// What the operator CLI needs to run against this environment from a laptop (after `az login`):
// the same settings the app has, identity-based (the CLI authenticates as you).
output PIPELINE_STEPS string = join(routeSpecs, ',')
output DARKROOM_QUEUE_PREFIX string = queuePrefix
output DARKROOM_UPLOAD_CONTAINER string = uploadContainer
output DARKROOM_COSMOS_DATABASE string = cosmosDatabaseName
output DARKROOM_COSMOS_CONTAINER string = cosmosContainerName
output DARKROOM_FACES_CONTAINER string = facesContainerName
output DARKROOM_PEOPLE_CONTAINER string = peopleContainerName
output DARKROOM_STORAGE__blobServiceUri string = storage.outputs.blobEndpoint
output DARKROOM_STORAGE__queueServiceUri string = storage.outputs.queueEndpoint
output DARKROOM_STORAGE__tableServiceUri string = storage.outputs.tableEndpoint
output DARKROOM_COSMOS__accountEndpoint string = cosmos.outputs.endpoint
