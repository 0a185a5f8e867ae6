# azd's prepackage hook on Windows: the twin of model_files.sh (same steps, same reasons: read
# there). Makes .venv with the app's requirements.txt when there is none, then runs
# local/model_files.py, a no-op when every model file is present and intact.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')

$py = Join-Path '.venv' 'Scripts/python.exe'
if (-not (Test-Path $py)) {
    $python = if ($env:PYTHON) { $env:PYTHON } else { 'python' }
    if (-not (Get-Command $python -ErrorAction SilentlyContinue)) {
        Write-Error "[model_files] no $python: install Python 3.11 (the app's runtime), or set PYTHON to one"
    }
    Write-Host "[model_files] creating .venv"
    & $python -m venv .venv
    if ($LASTEXITCODE -ne 0) { Write-Error "[model_files] $python -m venv failed" }
}
$want = (Get-FileHash -Algorithm SHA256 requirements.txt).Hash.ToLower()
$stamp = '.venv/.darkroom-runtime-requirements'
$current = if (Test-Path $stamp) { (Get-Content $stamp -Raw).Trim() } else { '' }
if (-not (Test-Path '.venv/.darkroom-requirements') -and $current -ne $want) {
    Write-Host '[model_files] pip install -r requirements.txt'
    & $py -m pip install -q --disable-pip-version-check -r requirements.txt
    if ($LASTEXITCODE -ne 0) { Write-Error '[model_files] pip install -r requirements.txt failed' }
    Set-Content -Path $stamp -Value $want
}
& $py -m local.model_files
exit $LASTEXITCODE
