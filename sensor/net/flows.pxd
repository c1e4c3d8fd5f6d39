# Cython declarations for flows.py (the compiled core, sensor/compiled.py).
from sensor.net.tcp cimport TcpDirection

cdef Py_ssize_t UNSET     # tcp.py: an offset not known yet

cdef class Flow:
    cdef public object key
    cdef public object app
    cdef public TcpDirection client
    cdef public TcpDirection server
    cdef public object vlan
    cdef public bint midstream
    cdef public bint started
    cdef public bint closing
    cdef public object last_ts
    cdef public tuple keys
    cdef public Py_ssize_t cost
    cdef public object queued_ts

cdef class FlowTable:
    cdef public object settings
    cdef public object stats
    cdef public object ooo_budget
    cdef public dict _by_key
    cdef public dict _flows
    cdef public Py_ssize_t memory_used
    cdef public set _ignored
    cdef public set _service_hosts
    cdef public object next_expiry
