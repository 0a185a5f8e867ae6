# Wait until the role assignments this provision created are in effect, before azd deploys.
# The Windows twin of postprovision.sh (same probe, same settings, same reasons: read there).
$ErrorActionPreference = 'Stop'

$waitSeconds = if ($env:DARKROOM_ROLE_WAIT_SECONDS) { [int]$env:DARKROOM_ROLE_WAIT_SECONDS } else { 600 }
$interval = if ($env:DARKROOM_ROLE_WAIT_INTERVAL) { [int]$env:DARKROOM_ROLE_WAIT_INTERVAL } else { 15 }
$settle = if ($env:DARKROOM_ROLE_SETTLE_SECONDS) { [int]$env:DARKROOM_ROLE_SETTLE_SECONDS } else { 60 }
$advice = "if the deploy then fails with HTTP 403 (BlobUploadFailed), the roles are still propagating: run 'azd deploy' again in a minute or two"

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Error 'postprovision: the Azure CLI (az) is required'
}
$account = $env:AZURE_STORAGE_ACCOUNT_NAME
$container = $env:AZURE_DEPLOYMENT_CONTAINER
if (-not $account -or -not $container -or -not $env:AZURE_PRINCIPAL_ID) {
    Write-Warning "postprovision: no deploying principal or storage output to probe role propagation with; $advice"
    exit 0
}

$waited = 0
while ($true) {
    $err = az storage blob list --auth-mode login --account-name $account --container-name $container --num-results 1 --only-show-errors -o none 2>&1
    if ($LASTEXITCODE -eq 0) { break }
    if ($waited -ge $waitSeconds) {
        Write-Warning "postprovision: data access to $account/$container still refused after $waited s ($err)"
        Write-Warning "postprovision: $advice"
        exit 0
    }
    Write-Host "postprovision: waiting for the new role assignments to take effect ($waited s so far)"
    Start-Sleep -Seconds $interval
    $waited += $interval
}

if ($waited -gt 0 -and $settle -gt 0) {
    Write-Host "postprovision: your data access works; $settle s more for the app identity's"
    Start-Sleep -Seconds $settle
}
Write-Host 'postprovision: role assignments in effect'
