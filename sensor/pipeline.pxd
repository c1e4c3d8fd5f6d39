# Cython declarations for pipeline.py (the compiled core, sensor/compiled.py): the state the
# per-frame entry point reads, and the stages it calls, as C fields.
cimport cython
from sensor.net.flows cimport Flow, FlowTable
from sensor.net.lane cimport BulkLane, FrameHeaders
from sensor.smb.fastpath cimport SmbFastPath
from sensor.smb.smb2 cimport Smb2Protocol

# Subtracted per segment (_smb_events): a C constant, not a module attribute
cdef Py_ssize_t REQUESTS_IN_CONNECTION

cdef class _FlowState:
    cdef public Flow tcp
    cdef public object smb
    cdef public Smb2Protocol smb2
    cdef public object http
    cdef public dict assocs
    cdef public dict pipes
    cdef public dict sessions
    cdef public object encrypted_sessions
    cdef public object extra_contexts
    cdef public Py_ssize_t extra_requests

cdef class Pipeline:
    cdef public object settings
    cdef public object catalog
    cdef public object stub_budget
    cdef public object message_budget
    cdef public object _rpc_settings
    cdef public object capture_file
    cdef public object frames
    cdef public FlowTable flows
    cdef public list _evicted
    cdef public dict _flows
    cdef public object held
    cdef public object _own
    cdef public Py_ssize_t _packets
    cdef public Py_ssize_t _bytes
    cdef public object _last_flow
    cdef public _FlowState _last_state
    cdef public object _retired
    cdef public object _ts
    cdef public object _next_expiry
    cdef public BulkLane lane
    cdef public _FlowState _lane_candidate
    cdef public SmbFastPath fast
    cdef public FrameHeaders _headers

    cpdef list feed(self, ts, linktype, data, frame)

    @cython.locals(lane=BulkLane, fast=SmbFastPath, state=_FlowState, headers=FrameHeaders, taken=bint)
    cdef _frame(self, ts, Py_ssize_t linktype, const unsigned char* buf, Py_ssize_t start, Py_ssize_t end,
                Py_ssize_t frame, data, list out)

    @cython.locals(extra=Py_ssize_t)
    cpdef _smb_events(self, _FlowState state, flow, ts, events, list out)
