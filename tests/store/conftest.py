from helpline.store.testing import db_url, migrated_store, postgres_cluster

__all__ = ["db_url", "migrated_store", "postgres_cluster"]
