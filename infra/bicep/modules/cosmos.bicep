// Cosmos DB for NoSQL, serverless (pay per request unit, nothing when idle), keys disabled: the
// app's identity gets the built-in Data Contributor as a Cosmos SQL role assignment (roles.bicep).
// The identity holds data-plane rights only, so the database and containers are created here.
//
// Faces (pipeline/stores/faces.py): two more containers, `faces` and `people`, partitioned by /owner
// (one caller's search stays in one logical partition) and searched with VectorDistance. That
// needs the account capability EnableNoSQLVectorSearch ("Vector Search for NoSQL API"; still
// an opt-in feature per learn.microsoft.com/azure/cosmos-db/vector-search, Sept 2025, which
// excludes only shared-throughput databases, so serverless is fine) and, per container, a vector
// embedding policy and a vector index, both fixed at creation (ARM schema: VectorEmbeddingPolicy
// and IndexingPolicy.vectorIndexes are in Microsoft.DocumentDB 2024-11-15).
//
// Search (GET /api/images?q=, FullTextContainsAny + ORDER BY RANK FullTextScore, or RRF with
// VectorDistance when an embedding deployment gives captions a vector): the images container
// always has a full-text policy and index on /search/text, and a vector policy and index on
// /search/vector only when searchVectorDimensions > 0 (main.bicep: enableOpenAiEmbeddings), equal
// to pipeline/stores/results.py images_container_policies(), which creates the same container on
// the laptop. Cosmos DB fixes a container's vector policy when the container is created and
// cannot add one later, so the vector part is opt-in: an environment whose images container was
// created without it keeps deploying unchanged, and turning embeddings on for it needs a new
// container (docs/deploy.md, "Search"). The ARM schema has ContainerResource.fullTextPolicy
// since 2025-04-15 and IndexingPolicy.fullTextIndexes since 2025-10-15 (the first stable version
// with both:
// learn.microsoft.com/azure/templates/microsoft.documentdb/2025-10-15/databaseaccounts/sqldatabases/containers),
// hence that version here. The account capability EnableNoSQLFullTextSearch is the portal's
// "Full Text & Hybrid Search for NoSQL API" feature: the feature is GA, yet Microsoft's own
// training still says the full-text index and query functions depend on it and that it must be
// on before the container is created (learn.microsoft.com/training/modules/
// implement-full-text-vector-search-azure-cosmos-db-nosql/2-implement-full-text-search); turning
// on a capability that is no longer needed costs nothing, a missing one fails every search.

param name string
param location string
param tags object = {}
param databaseName string
param containerName string

@description('DARKROOM_FACES_CONTAINER: one document per detected face, with its embedding.')
param facesContainerName string = 'faces'

@description('DARKROOM_PEOPLE_CONTAINER: one document per person, with an erased person\'s template.')
param peopleContainerName string = 'people'

// The embedder's output (pipeline/vision/local/face_embedding.py DIMENSIONS, dlib ResNet v1) and its
// metric (pipeline/stores/faces.py METRIC). A container's vector policy cannot be changed later: a new
// model with other dimensions needs new containers (new names) and a reprocess.
@description('Dimensions of a face embedding (dlib ResNet v1: 128).')
param embeddingDimensions int = 128

@allowed([
  'euclidean'
  'cosine'
  'dotproduct'
])
param embeddingDistance string = 'euclidean'

@description('Embedding model steps\' vector containers: [{name, dimensions}] (cosine on /vector, partition /owner).')
param embeddingContainers array = []

@description('Dimensions of a caption\'s vector in the images container (/search/vector): the text embedding deployment\'s, DARKROOM_OPENAI_EMBEDDING_DIMENSIONS (text-embedding-3-small: 1536); 0 (the default): no vector policy and no vector index on the images container. Fixed when the container is created.')
@minValue(0)
param searchVectorDimensions int = 0

// Vector index type. quantizedFlat: an exact (brute-force) scan over compressed vectors, so a
// query's RU grows with the vectors it scans, which the /owner partition and the model/usable
// filters keep to one caller's faces; Microsoft recommends it up to ~50,000 vectors in a search's
// scope. diskANN (approximate, cheapest RU at scale) pays off beyond that. Both need >= 1,000
// vectors indexed before the quantized index is used; below that Cosmos runs a full scan (same
// results, more RU, still small for a library of a few hundred faces).
var vectorIndexType = 'quantizedFlat'

// The images container's searched text (pipeline/stores/results.py SEARCH_TEXT_PATH) and its
// language (stemming and stop words of the full-text index).
var searchTextPath = '/search/text'
var searchLanguage = 'en-US'
var searchVectorPath = '/search/vector'

// The caption vector's part of the images container, only with an embedding deployment: a vector
// embedding policy cannot be added to an existing container, so a container created without it
// must be deployed without it (the keys absent, not null).
var searchVector = searchVectorDimensions > 0
var searchVectorPolicy = searchVector ? {
  // A caption's meaning (cosine): found by "puppy" although the words say "dog".
  vectorEmbeddingPolicy: {
    vectorEmbeddings: [
      {
        path: searchVectorPath
        dataType: 'float32'
        distanceFunction: 'cosine'
        dimensions: searchVectorDimensions
      }
    ]
  }
} : {}
// flat allows at most 505 dimensions; quantizedFlat as for the faces (see above)
var searchVectorIndexes = searchVector ? {
  vectorIndexes: [
    {
      path: searchVectorPath
      type: vectorIndexType
    }
  ]
} : {}
// The vector is read by its vector index only.
var searchVectorExcludedPaths = searchVector ? [
  {
    path: '${searchVectorPath}/*'
  }
] : []

// The containers searched by vector, with the path of the vector in their documents. The
// policies below must equal pipeline/stores/faces.py vector_policies(path, dimensions, metric), which
// creates the same containers on the laptop (tests/test_infra.py compares them).
var vectorContainers = concat([
  {
    name: facesContainerName
    path: '/embedding'
    dimensions: embeddingDimensions
    distance: embeddingDistance
  }
  {
    name: peopleContainerName
    path: '/template'
    dimensions: embeddingDimensions
    distance: embeddingDistance
  }
], map(embeddingContainers, e => {
  name: e.name
  path: '/vector'
  dimensions: e.dimensions
  distance: 'cosine'
}))

resource account 'Microsoft.DocumentDB/databaseAccounts@2025-10-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
      {
        // Takes effect at once on a new account; added to an existing one it may take ~15 min.
        name: 'EnableNoSQLVectorSearch'
      }
      {
        // Full-text search on the images container (see the top of this file).
        name: 'EnableNoSQLFullTextSearch'
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    disableLocalAuth: true
    // Control-plane writes (databases, containers) only through ARM, never with a data key.
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2025-10-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource images 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-10-15' = {
  parent: database
  name: containerName
  properties: {
    resource: union({
      id: containerName
      // One document per image, id = hash of container/name: point reads and upserts by id.
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
      // The words an image is found by: what GET /api/images?q= ranks (BM25, English analysis).
      fullTextPolicy: {
        defaultLanguage: searchLanguage
        fullTextPaths: [
          {
            path: searchTextPath
            language: searchLanguage
          }
        ]
      }
      indexingPolicy: union({
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        // Large free-form subtrees are never filtered on; not indexing them saves write RUs.
        // The full-text path stays in: its own index (fullTextIndexes) serves the search.
        excludedPaths: concat([
          {
            path: '/analysis/text/*'
          }
          {
            path: '/analysis/faces/*'
          }
          {
            path: '/exif/*'
          }
        ], searchVectorExcludedPaths, [
          {
            path: '/"_etag"/?'
          }
        ])
        fullTextIndexes: [
          {
            path: searchTextPath
          }
        ]
      }, searchVectorIndexes)
    }, searchVectorPolicy)
  }
}

resource vectors 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2025-10-15' = [
  for c in vectorContainers: {
    parent: database
    name: c.name
    properties: {
      resource: {
        id: c.name
        partitionKey: {
          paths: [
            '/owner'
          ]
          kind: 'Hash'
          version: 2
        }
        vectorEmbeddingPolicy: {
          vectorEmbeddings: [
            {
              path: c.path
              dataType: 'float32'
              distanceFunction: c.distance
              dimensions: c.dimensions
            }
          ]
        }
        indexingPolicy: {
          indexingMode: 'consistent'
          automatic: true
          includedPaths: [
            {
              path: '/*'
            }
          ]
          // The vector itself is never range-filtered: only the vector index reads it.
          excludedPaths: [
            {
              path: '${c.path}/*'
            }
            {
              path: '/"_etag"/?'
            }
          ]
          vectorIndexes: [
            {
              path: c.path
              type: vectorIndexType
            }
          ]
        }
      }
    }
  }
]

output id string = account.id
output name string = account.name
output endpoint string = account.properties.documentEndpoint
