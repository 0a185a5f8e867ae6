"""Create the containers, queues and Cosmos DB container the app needs, if missing.

Locally `up` and the tests call this; in Azure, Bicep creates the same resources and the app's
managed identity holds data-plane roles only (it could not create a database anyway).
"""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.cosmos import PartitionKey

from pipeline.azure_clients import AzureClients
from pipeline.registry import registered_step_specs, step_name
from pipeline.settings import LANES


def ensure_resources(azure: AzureClients) -> None:
    settings = azure.settings
    for container in (
        settings.upload_container,
        settings.derived_container,
        settings.claims_container,
        settings.publish.container,
    ):
        with contextlib.suppress(ResourceExistsError):
            azure.blob_service.create_container(container)
    for spec in registered_step_specs(settings.pipeline_steps):
        for queue in (
            name
            for lane in LANES
            for name in (
                settings.queue_name(step_name(spec), lane),
                settings.poison_queue_name(step_name(spec), lane),
            )
        ):
            with contextlib.suppress(ResourceExistsError):
                azure.queue_service.create_queue(queue)
    with contextlib.suppress(ResourceExistsError):
        azure.queue_service.create_queue(settings.results_queue_name())
    database = azure.cosmos.create_database_if_not_exists(settings.cosmos_database)
    database.create_container_if_not_exists(
        settings.cosmos_container, partition_key=PartitionKey(path="/id")
    )
