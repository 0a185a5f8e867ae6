# Create or update the Event Grid subscription BlobCreated(uploads) -> ingest, after code deploy.
# The Windows twin of postdeploy.sh (same steps, same module, same idempotency): run by azd's
# postdeploy hook, or by hand on the plain az path with the same variables set.
$ErrorActionPreference = 'Stop'

$root = Resolve-Path (Join-Path $PSScriptRoot '..\..')
$module = Join-Path $root 'infra/bicep/modules/eventgrid-subscription.bicep'

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Error 'postdeploy: the Azure CLI (az) is required'
}

# Fill missing variables from the azd environment (azd passes them to hooks already).
if (-not $env:AZURE_FUNCTION_APP_NAME -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    foreach ($line in (& azd env get-values)) {
        if ($line -match '^([A-Za-z0-9_]+)=(.*)$') {
            $name = $Matches[1]
            $value = $Matches[2] -replace '^"|"$', ''
            if (-not [Environment]::GetEnvironmentVariable($name)) {
                [Environment]::SetEnvironmentVariable($name, $value)
            }
        }
    }
}

foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_STORAGE_ACCOUNT_NAME', 'EVENTGRID_SYSTEM_TOPIC_NAME') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Write-Error "postdeploy: $name is not set (run after provisioning)"
    }
}
$rg = $env:AZURE_RESOURCE_GROUP
$app = $env:AZURE_FUNCTION_APP_NAME
$upload = if ($env:DARKROOM_UPLOAD_CONTAINER) { $env:DARKROOM_UPLOAD_CONTAINER } else { 'uploads' }
$deadLetter = if ($env:EVENTGRID_DEADLETTER_CONTAINER) { $env:EVENTGRID_DEADLETTER_CONTAINER } else { 'eventgrid-deadletter' }

# 1. Wake the app: Event Grid's validation handshake must be answered within 30 s, and the
#    blobs_extension key is created when the host first starts.
if ($env:SERVICE_API_URI) {
    $healthy = $false
    for ($i = 0; $i -lt 30 -and -not $healthy; $i++) {
        try {
            $r = Invoke-WebRequest -Uri "$($env:SERVICE_API_URI)/api/health" -TimeoutSec 30 -UseBasicParsing
            $healthy = ($r.StatusCode -eq 200)
        } catch {
            Write-Host "postdeploy: waiting for $($env:SERVICE_API_URI)/api/health"
            Start-Sleep -Seconds 10
        }
    }
    if (-not $healthy) { Write-Warning 'postdeploy: health never answered 200; trying anyway' }
}

# 2. The host's blobs_extension system key (present only once `ingest` has been indexed).
$key = ''
for ($i = 0; $i -lt 30 -and -not $key; $i++) {
    $key = (az functionapp keys list -n $app -g $rg --query systemKeys.blobs_extension -o tsv 2>$null)
    if (-not $key -or $key -eq 'None') {
        $key = ''
        Write-Host "postdeploy: waiting for the blobs_extension key of $app"
        Start-Sleep -Seconds 10
    }
}
if (-not $key) {
    Write-Error "postdeploy: no blobs_extension key: did the app index its functions? (az functionapp function list -n $app -g $rg must list 'ingest')"
}

# 3. Deploy the subscription module; the key goes through a private parameters file, not argv.
$params = New-TemporaryFile
try {
    @{
        '$schema'      = 'https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#'
        contentVersion = '1.0.0.0'
        parameters     = @{
            systemTopicName     = @{ value = $env:EVENTGRID_SYSTEM_TOPIC_NAME }
            functionAppName     = @{ value = $app }
            storageAccountName  = @{ value = $env:AZURE_STORAGE_ACCOUNT_NAME }
            uploadContainer     = @{ value = $upload }
            deadLetterContainer = @{ value = $deadLetter }
            blobsExtensionKey   = @{ value = $key }
        }
    } | ConvertTo-Json -Depth 5 | Set-Content -Path $params -Encoding utf8

    $ok = $false
    for ($attempt = 1; $attempt -le 5 -and -not $ok; $attempt++) {
        az deployment group create -g $rg -n darkroom-eventgrid-subscription -f $module -p "@$params" --only-show-errors -o none
        $ok = ($LASTEXITCODE -eq 0)
        if (-not $ok -and $attempt -lt 5) {
            # The webhook handshake fails while a cold instance is still starting, and
            # dead-lettering is refused while the topic's new role propagates: try again.
            Write-Host "postdeploy: retrying the subscription deployment ($($attempt + 1)/5) in 30 s"
            Start-Sleep -Seconds 30
        }
    }
    if (-not $ok) { Write-Error "postdeploy: subscription deployment failed; if the roles were assigned minutes ago, run 'azd deploy' again" }
} finally {
    Remove-Item -Force $params -ErrorAction SilentlyContinue
}

Write-Host "postdeploy: Event Grid subscription darkroom-ingest: BlobCreated in '$upload' -> $app/ingest"
