"""The stores: the only code that talks to Azure Storage and Cosmos DB — the clients, blobs and
queues, the image documents, the faces store, table entities, uploads and erasure."""
