# Cython declarations for protocol.py (the compiled core, sensor/compiled.py).
from sensor.smb.pipes cimport PipeTable

cdef class SmbProtocolState:
    cdef public object flow
    cdef public object stats
    cdef public object sessions
    cdef public PipeTable pipes
    cdef public dict _pending
    cdef public dict _trees

    cpdef Py_ssize_t held(self)
