# Cython declarations for lane.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.net.flows cimport Flow
from sensor.net.tcp cimport TcpDirection

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

    @cython.locals(entry=_Direction, ethertype=Py_ssize_t, ver_ihl=Py_ssize_t, total=Py_ssize_t,
                   frag=Py_ssize_t, proto=Py_ssize_t, seq=Py_ssize_t, ack=Py_ssize_t, offset=Py_ssize_t,
                   flags=Py_ssize_t, size=Py_ssize_t)
    cpdef bint admit(self, ts, bytes data)
    cpdef bint holds(self, owner)
