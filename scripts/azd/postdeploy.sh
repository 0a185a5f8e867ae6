#!/bin/sh
# Create or update the Event Grid subscription BlobCreated(uploads) -> ingest, after code deploy.
#
# Run by `azd deploy`/`azd up` (azure.yaml hooks.postdeploy), and by hand on the plain az path
# (docs/deploy.md) with the same variables exported. Idempotent: it deploys
# infra/bicep/modules/eventgrid-subscription.bicep, which updates the subscription of the same
# name in place. POSIX sh on purpose (azd runs posix hooks with `sh`).
#
# Needs: az (logged in). Reads, from the environment or else from `azd env get-values`:
#   AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME
#   EVENTGRID_SYSTEM_TOPIC_NAME EVENTGRID_DEADLETTER_CONTAINER DARKROOM_UPLOAD_CONTAINER
#   SERVICE_API_URI (optional: warm-up probe)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
module="$root/infra/bicep/modules/eventgrid-subscription.bicep"

command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required" >&2; exit 1; }

# Fill missing variables from the azd environment (azd passes them to hooks already).
if [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  envfile=$(mktemp)
  azd env get-values >"$envfile"
  while IFS='=' read -r key value; do
    case "$key" in
      ''|\#*|*[!A-Za-z0-9_]*) continue ;;
    esac
    value=${value#\"}
    value=${value%\"}
    eval "current=\${$key:-}"
    [ -n "$current" ] || export "$key=$value"
  done <"$envfile"
  rm -f "$envfile"
fi

for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME AZURE_STORAGE_ACCOUNT_NAME \
            EVENTGRID_SYSTEM_TOPIC_NAME; do
  eval "value=\${$name:-}"
  [ -n "$value" ] || { echo "postdeploy: $name is not set (run after provisioning)" >&2; exit 1; }
done
upload=${DARKROOM_UPLOAD_CONTAINER:-uploads}
deadletter=${EVENTGRID_DEADLETTER_CONTAINER:-eventgrid-deadletter}
rg=$AZURE_RESOURCE_GROUP
app=$AZURE_FUNCTION_APP_NAME

# 1. Wake the app: Event Grid validates a new endpoint with a handshake that must be answered
#    within 30 s, and the blobs_extension key is created when the host first starts.
if [ -n "${SERVICE_API_URI:-}" ] && command -v curl >/dev/null 2>&1; then
  i=0
  while [ $i -lt 30 ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$SERVICE_API_URI/api/health" || true)
    [ "$code" = "200" ] && break
    i=$((i + 1))
    echo "postdeploy: waiting for $SERVICE_API_URI/api/health (HTTP $code)"
    sleep 10
  done
  [ "$code" = "200" ] || echo "postdeploy: health never answered 200 (last $code); trying anyway" >&2
fi

# 2. The host's blobs_extension system key (present only once `ingest` has been indexed).
key=""
i=0
while [ $i -lt 30 ]; do
  key=$(az functionapp keys list -n "$app" -g "$rg" --query systemKeys.blobs_extension -o tsv 2>/dev/null || true)
  [ -n "$key" ] && [ "$key" != "None" ] && break
  key=""
  i=$((i + 1))
  echo "postdeploy: waiting for the blobs_extension key of $app"
  sleep 10
done
[ -n "$key" ] || {
  echo "postdeploy: no blobs_extension key: did the app index its functions? Check its logs" >&2
  echo "  (az functionapp function list -n $app -g $rg must list 'ingest')" >&2
  exit 1
}

# 3. Deploy the subscription module; the key goes through a private parameters file, not argv.
params=$(mktemp)
trap 'rm -f "$params"' EXIT INT TERM
chmod 600 "$params"
cat >"$params" <<JSON
{
  "\$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#",
  "contentVersion": "1.0.0.0",
  "parameters": {
    "systemTopicName": { "value": "$EVENTGRID_SYSTEM_TOPIC_NAME" },
    "functionAppName": { "value": "$app" },
    "storageAccountName": { "value": "$AZURE_STORAGE_ACCOUNT_NAME" },
    "uploadContainer": { "value": "$upload" },
    "deadLetterContainer": { "value": "$deadletter" },
    "blobsExtensionKey": { "value": "$key" }
  }
}
JSON

attempt=1
until az deployment group create -g "$rg" -n darkroom-eventgrid-subscription \
    -f "$module" -p "@$params" --only-show-errors -o none; do
  # The webhook handshake fails while a cold instance is still starting, and dead-lettering is
  # refused while the system topic's new Storage Blob Data Contributor role propagates: retry.
  [ $attempt -ge 5 ] && {
    echo "postdeploy: subscription deployment failed; if the roles were assigned minutes ago, run 'azd deploy' again" >&2
    exit 1
  }
  attempt=$((attempt + 1))
  echo "postdeploy: retrying the subscription deployment ($attempt/5) in 30 s"
  sleep 30
done

echo "postdeploy: Event Grid subscription darkroom-ingest: BlobCreated in '$upload' -> $app/ingest"
