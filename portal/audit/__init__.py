"""The audit log's reading side: search with filters and keyset paging, exports, the
compliance report and retention. Writing is ``portal.services.record_audit``."""
