"""Remote outputs for events and alerts: syslog (RFC 5424 over UDP, TCP or TLS) and HTTP
collectors (JSON lines or arrays, Splunk HEC, Elasticsearch _bulk), each behind a bounded
on-disk spool and a sender thread, so a collector outage loses nothing and a slow collector
never stalls capture."""
