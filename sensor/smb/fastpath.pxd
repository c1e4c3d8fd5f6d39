# Cython declarations for fastpath.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.net.flows cimport Flow, FlowTable
from sensor.net.lane cimport BulkLane, FrameHeaders
from sensor.net.tcp cimport TcpDirection
from sensor.smb.netbios cimport NbssStream
from sensor.smb.smb2 cimport Smb2Protocol

# The constants take compares per frame, as C constants (imported ones converted at import)
cdef Py_ssize_t SEQ_MASK, HALF_SEQ_SPACE, MAX_WINDOW, SMB2, SESSION_MESSAGE, WHOLE_MESSAGE_LIMIT, _SEQ_SPACE
cdef Py_ssize_t FIRST_PROTOCOL_ID, UNSET
cdef tuple MIN_MESSAGE

cdef class _Direction:
    cdef public Flow flow
    cdef public TcpDirection tcp
    cdef public TcpDirection peer
    cdef public NbssStream stream
    cdef public object conn            # SmbConnection: a Python class (sensor/compiled.py)
    cdef public Smb2Protocol smb2
    cdef public bint from_client
    cdef public object owner
    cdef public bytes key

cdef class SmbFastPath:
    cdef public FlowTable flows
    cdef public BulkLane lane
    cdef public dict entries
    cdef public _Direction _last
    cdef public _Direction _before
    cdef public dict _owners
    cdef public object owner
    cdef public bint skipping
    cdef public Py_ssize_t frames
    cdef public Py_ssize_t messages
    cdef public Py_ssize_t operations

    @cython.locals(key=bytes, entry=_Direction, flow=Flow, lane=BulkLane, this=TcpDirection, peer=TcpDirection,
                   stream=NbssStream, smb2=Smb2Protocol, seq=Py_ssize_t, ack=Py_ssize_t, nxt=Py_ssize_t,
                   acking=bint, peer_next=Py_ssize_t, delta=Py_ssize_t, acked=Py_ssize_t,
                   start=Py_ssize_t, end=Py_ssize_t, size=Py_ssize_t, at=Py_ssize_t, length=Py_ssize_t,
                   protocol=Py_ssize_t, whole=bint, from_client=bint, continuing=bint,
                   partial=Py_ssize_t, message=bytes)
    # (frame: a C integer, boxed only where a stage keeps it, not per frame)
    cdef take(self, ts, const unsigned char* buf, FrameHeaders headers, Py_ssize_t frame)
    cdef _message(self, _Direction entry, ts, Py_ssize_t frame, const unsigned char* buf, Py_ssize_t at,
                  Py_ssize_t length)
