"""The database: the driver's client, collections, indexes and schema steps, and the embedded store."""
