"""Create the containers, queues and Cosmos DB container the app needs, if missing.

Locally `up` and the tests call this; in Azure, Bicep creates the same resources and the app's
managed identity holds data-plane roles only (it could not create a database anyway).
"""

from __future__ import annotations

import contextlib

from azure.core.exceptions import ResourceExistsError
from azure.cosmos import PartitionKey
from azure.storage.blob import CorsRule

from pipeline.framework.registry import registered_step_specs, step_name
from pipeline.settings import LANES, PROJECT_ROOT
from pipeline.stores import embeddings, faces, results
from pipeline.stores.azure_clients import AzureClients
from pipeline.vision.local import face_embedding
from pipeline.vision.model_step.step import embedding_dimensions


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
    with contextlib.suppress(ResourceExistsError):
        azure.table_service.create_table(settings.api.limits_table)
    allow_page_origins(azure)
    database = azure.cosmos.create_database_if_not_exists(settings.cosmos_database)
    openai = settings.analysis.openai
    database.create_container_if_not_exists(  # as Bicep makes it on Azure
        settings.cosmos_container,
        partition_key=PartitionKey(path="/id"),
        # the caption vector only with an embedding deployment (fixed at creation, as on Azure)
        **results.images_container_policies(
            openai.embedding_dimensions if openai.embedding_deployment else None
        ),
    )
    faces.ensure_containers(azure, face_embedding.DIMENSIONS, faces.METRIC)
    for spec in settings.model_steps.values():
        if spec.task == "embed" and spec.container:
            dimensions = embedding_dimensions(spec, PROJECT_ROOT)
            embeddings.ensure_container(azure, spec.container, dimensions)


def allow_page_origins(azure: AzureClients) -> None:
    """CORS on the emulator's blob service: the page (served by the local host on another
    port) uploads straight to it and reads its links, as it does from the storage account on
    Azure (Bicep sets the same rule there)."""
    settings = azure.settings
    origins = list(settings.api.cors_origins) or [
        f"http://127.0.0.1:{settings.host_port}",
        f"http://localhost:{settings.host_port}",
    ]
    rule = CorsRule(
        allowed_origins=origins,
        allowed_methods=["GET", "HEAD", "PUT", "OPTIONS"],
        allowed_headers=["x-ms-*", "content-type", "content-length"],
        exposed_headers=["etag", "x-ms-*"],
        max_age_in_seconds=3600,
    )
    # Several local stacks (tests) share one emulator: keep theirs, as Azure keeps up to five.
    kept = [
        r
        for r in azure.blob_service.get_service_properties().get("cors") or []
        if r.allowed_origins != ",".join(origins)
    ]
    azure.blob_service.set_service_properties(cors=[*kept[-4:], rule])
