"""The product store: Elasticsearch (production) or an OpenSearch-compatible server."""
