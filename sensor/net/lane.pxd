# Cython declarations for lane.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.net.flows cimport Flow
from sensor.net.tcp cimport TcpDirection

# lane.py's frame layout, as C constants (read per frame; a Python constant costs an object)
cdef Py_ssize_t ETHERTYPE_AT, VER_IHL_AT, TOTAL_AT, FRAG_AT, PROTO_AT, SEQ_AT, ACK_AT, DATA_OFFSET_AT, FLAGS_AT
cdef Py_ssize_t IP_START, TCP_START, KEY_START, KEY_END, MIN_FRAME, ETHERTYPE_IPV4, IPV4_NO_OPTIONS, IPPROTO_TCP
cdef Py_ssize_t FIN, SYN, RST, ACK, CONTROL_FLAGS
cdef Py_ssize_t UNSET     # tcp.py: an offset not known yet

@cython.locals(value=Py_ssize_t)
cdef Py_ssize_t be32(const unsigned char* buf, Py_ssize_t at)

cdef class FrameHeaders:
    cdef public bytes key
    cdef public Py_ssize_t seq
    cdef public Py_ssize_t ack
    cdef public Py_ssize_t payload
    cdef public Py_ssize_t end

    @cython.locals(total=Py_ssize_t, offset=Py_ssize_t, payload=Py_ssize_t, frame_end=Py_ssize_t)
    cdef bint read(self, const unsigned char* buf, Py_ssize_t start, Py_ssize_t end)

cdef class _Direction:
    cdef public bytes key
    cdef public Py_ssize_t seq
    cdef public Py_ssize_t budget
    cdef public Py_ssize_t taken
    cdef public TcpDirection tcp
    cdef public bint from_client
    cdef public _Direction peer
    cdef public Flow flow
    cdef public object skipper
    cdef public object owner

cdef class BulkLane:
    cdef public dict entries
    cdef public dict _owners
    cdef public object until
    cdef public Py_ssize_t packets
    cdef public Py_ssize_t bytes

    @cython.locals(entry=_Direction, size=Py_ssize_t)
    cdef bint admit(self, ts, FrameHeaders frame)
    cpdef bint holds(self, owner)
