#!/bin/sh
# Wait until the role assignments this provision created are in effect, before azd deploys.
#
# Why: `azd up` deploys the code seconds after provisioning, and Flex Consumption uploads the
# package to its deployment container with the app's identity, whose Storage Blob Data Owner
# assignment was created moments before. Azure RBAC changes take minutes to take effect, so the
# first deploy can fail with 403 (`BlobUploadFailed` / `InaccessibleStorageException`;
# Azure/azure-dev#8026; learn.microsoft.com/azure/role-based-access-control/troubleshooting).
# The app's identity cannot be probed from here, so this probes the nearest thing: the deploying
# principal (AZURE_PRINCIPAL_ID), whose data roles on the same account were assigned in the same
# deployment, reads the deployment container with its Entra token. Once it can (and when it had
# to wait at all, DARKROOM_ROLE_SETTLE_SECONDS more for the identity's assignment), azd deploys.
# A re-provision whose roles already work costs one probe. Never fails the provision: after
# DARKROOM_ROLE_WAIT_SECONDS it warns and says what to do if the deploy then answers 403.
#
# Run by `azd provision`/`azd up` (azure.yaml hooks.postprovision); POSIX sh (azd runs posix
# hooks with `sh`). Needs az (logged in). Reads AZURE_STORAGE_ACCOUNT_NAME,
# AZURE_DEPLOYMENT_CONTAINER, AZURE_PRINCIPAL_ID (azd passes the environment to hooks).
set -eu

wait_seconds=${DARKROOM_ROLE_WAIT_SECONDS:-600}
interval=${DARKROOM_ROLE_WAIT_INTERVAL:-15}
settle=${DARKROOM_ROLE_SETTLE_SECONDS:-60}
advice="if the deploy then fails with HTTP 403 (BlobUploadFailed), the roles are still propagating: run 'azd deploy' again in a minute or two"

command -v az >/dev/null 2>&1 || { echo "postprovision: the Azure CLI (az) is required" >&2; exit 1; }
account=${AZURE_STORAGE_ACCOUNT_NAME:-}
container=${AZURE_DEPLOYMENT_CONTAINER:-}
if [ -z "$account" ] || [ -z "$container" ] || [ -z "${AZURE_PRINCIPAL_ID:-}" ]; then
  echo "postprovision: no deploying principal or storage output to probe role propagation with; $advice" >&2
  exit 0
fi

waited=0
while :; do
  if err=$(az storage blob list --auth-mode login --account-name "$account" \
      --container-name "$container" --num-results 1 --only-show-errors -o none 2>&1); then
    break
  fi
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "postprovision: data access to $account/$container still refused after ${waited} s" >&2
    echo "  (last answer: $(printf '%s' "$err" | tr '\n' ' ' | cut -c1-300))" >&2
    echo "postprovision: $advice" >&2
    exit 0
  fi
  echo "postprovision: waiting for the new role assignments to take effect (${waited} s so far)"
  sleep "$interval"
  waited=$((waited + interval))
done

if [ "$waited" -gt 0 ] && [ "$settle" -gt 0 ]; then
  echo "postprovision: your data access works; ${settle} s more for the app identity's"
  sleep "$settle"
fi
echo "postprovision: role assignments in effect"
