"""Image embeddings of a model step, in a Cosmos DB container of their own with a vector index.

One container per embedding model step (`DARKROOM_MODEL_<NAME>__CONTAINER`, default
`embeddings-<name>`), partitioned by owner like the faces, one row per image: `{id: image,
owner, image, model, vector}`. The vectors are L2-normalised (pipeline.vision.model_step), so the
container's distance is cosine and `VectorDistance` is a similarity (higher: more alike); only
vectors of the same model are compared. A container's vector policy cannot change once made, so
its dimensions come from the model at provisioning (the laptop) or from Bicep (Azure).
"""

from __future__ import annotations

from typing import Any

from azure.cosmos import ContainerProxy, PartitionKey
from azure.cosmos.exceptions import CosmosResourceNotFoundError

from pipeline.stores.azure_clients import AzureClients
from pipeline.stores.faces import partition, vector_policies

VECTOR_PATH = "/vector"
METRIC = "cosine"


def ensure_container(azure: AzureClients, name: str, dimensions: int) -> None:
    """Create the container with its vector policy (laptop; Bicep on Azure, where the identity
    has data-plane roles only)."""
    database = azure.cosmos.get_database_client(azure.settings.cosmos_database)
    embedding, indexing = vector_policies(VECTOR_PATH, dimensions, METRIC)
    database.create_container_if_not_exists(
        name,
        partition_key=PartitionKey(path="/owner"),
        indexing_policy=indexing,
        vector_embedding_policy=embedding,
    )


class EmbeddingsStore:
    def __init__(self, azure: AzureClients, container: str) -> None:
        database = azure.cosmos.get_database_client(azure.settings.cosmos_database)
        self.container: ContainerProxy = database.get_container_client(container)

    def save(self, image: str, owner: str | None, model: str, vector: list[float]) -> None:
        self.container.upsert_item(
            {
                "id": image,
                "owner": partition(owner),
                "image": image,
                "model": model,
                "vector": vector,
            }
        )

    def get(self, image: str, owner: str | None) -> dict | None:
        try:
            return self.container.read_item(image, partition_key=partition(owner))
        except CosmosResourceNotFoundError:
            return None

    def delete(self, image: str, owner: str | None) -> bool:
        try:
            self.container.delete_item(image, partition_key=partition(owner))
        except CosmosResourceNotFoundError:
            return False
        return True

    def nearest(
        self, owner: str | None, model: str, vector: list[float], k: int, exclude: str
    ) -> list[dict[str, Any]]:
        """The `k` images of the owner's most like `vector` by one vector query that real Cosmos
        DB and the local emulator both evaluate: [{image, similarity}], most alike first."""
        sql = (
            "SELECT TOP @k c.image, VectorDistance(c.vector, @q) AS similarity FROM c "
            "WHERE c.owner = @owner AND c.model = @model AND c.image != @image "
            "ORDER BY VectorDistance(c.vector, @q)"
        )
        params = {
            "@k": k,
            "@q": vector,
            "@owner": partition(owner),
            "@model": model,
            "@image": exclude,
        }
        return list(
            self.container.query_items(
                sql,
                parameters=[{"name": n, "value": v} for n, v in params.items()],
                partition_key=partition(owner),
            )
        )
