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

// Vector index type. quantizedFlat: an exact (brute-force) scan over compressed vectors, so a
// query's RU grows with the vectors it scans, which the /owner partition and the model/usable
// filters keep to one caller's faces; Microsoft recommends it up to ~50,000 vectors in a search's
// scope. diskANN (approximate, cheapest RU at scale) pays off beyond that. Both need >= 1,000
// vectors indexed before the quantized index is used; below that Cosmos runs a full scan (same
// results, more RU, still small for a library of a few hundred faces).
var vectorIndexType = 'quantizedFlat'

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

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
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

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource images 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      // One document per image, id = hash of container/name: point reads and upserts by id.
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/*'
          }
        ]
        // Large free-form subtrees are never filtered on; not indexing them saves write RUs.
        excludedPaths: [
          {
            path: '/analysis/text/*'
          }
          {
            path: '/analysis/faces/*'
          }
          {
            path: '/exif/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
      }
    }
  }
}

resource vectors 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = [
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
