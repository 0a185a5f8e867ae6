"""The SDK clients keep what their SDKs would have configured, plus the worker's pool size.

Passing a transport to an Azure SDK client replaces the one the SDK would build, and with it the
SDK's own connection settings. These tests read the settings off the clients the pipeline builds
(no network needed) and compare them with the SDKs' own constants, so an SDK update that changes
them is noticed here rather than as a slow or hanging worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob._shared import constants as blob_constants
from azure.storage.queue._shared import constants as queue_constants

from pipeline.settings import Settings
from pipeline.stores.azure_clients import POOL_CONNECTIONS, STORAGE_TRANSPORT, AzureClients
from tests.harness import emulator_env


def _transport(client):
    """The transport the SDK's pipeline sends through (the tables SDK keeps it one level down)."""
    pipeline = getattr(client, "_pipeline", None) or client._client._client._pipeline
    return pipeline._transport


@pytest.mark.parametrize("constants", [blob_constants, queue_constants], ids=["blob", "queue"])
def test_storage_transport_settings_are_the_storage_sdks_own(constants):
    assert STORAGE_TRANSPORT == {
        "connection_data_block_size": constants.DATA_BLOCK_SIZE,
        "connection_timeout": constants.CONNECTION_TIMEOUT,
        "read_timeout": constants.READ_TIMEOUT,
    }


def _clients(tmp_path: Path, **extra: str) -> AzureClients:
    return AzureClients(Settings.from_env({**emulator_env(tmp_path), **extra}))


@pytest.mark.parametrize("service", ["blob_service", "queue_service"])
def test_storage_clients_stream_in_the_sdks_blocks_with_its_timeouts(tmp_path, service):
    transport = _transport(getattr(_clients(tmp_path), service))
    config = transport.connection_config
    assert config.data_block_size == STORAGE_TRANSPORT["connection_data_block_size"]
    assert config.timeout == STORAGE_TRANSPORT["connection_timeout"]
    assert config.read_timeout == STORAGE_TRANSPORT["read_timeout"]


def test_every_client_pools_enough_connections_and_loopback_ignores_proxies(tmp_path):
    azure = _clients(tmp_path)  # (a Cosmos client reaches its account when built: not here)
    for client in (azure.blob_service, azure.queue_service, azure.table_service):
        session = _transport(client).session
        assert session.get_adapter("https://127.0.0.1/")._pool_maxsize == POOL_CONNECTIONS
        assert session.trust_env is False  # the emulators are on loopback


def test_identity_based_storage_keeps_the_sdk_settings_and_the_environment(tmp_path):
    """On Azure (endpoints and the managed identity) proxies from the environment still apply."""
    azure = _clients(
        tmp_path,
        DARKROOM_STORAGE="",
        DARKROOM_STORAGE__blobServiceUri="https://darkroomdata.blob.core.windows.net",
        DARKROOM_STORAGE__queueServiceUri="https://darkroomdata.queue.core.windows.net",
        DARKROOM_STORAGE__credential="managedidentity",
    )
    transport = _transport(azure.blob_service)
    assert transport.connection_config.data_block_size == 256 * 1024
    assert transport.session.trust_env is True
