# Cython declarations for smb2.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.smb.protocol cimport SmbProtocolState

cdef class _Pending:
    cdef public Py_ssize_t command
    cdef public object session_id
    cdef public object tree_id
    cdef public object file_id
    cdef public _Pending via
    cdef public object auth
    cdef public object path
    cdef public bytes raw_name
    cdef public bint is_pipe
    cdef public list deferred
    cdef public bint transceive

cdef class Smb2Protocol(SmbProtocolState):
    @cython.locals(size=Py_ssize_t, status=Py_ssize_t, command=Py_ssize_t, flags=Py_ssize_t,
                   next_command=Py_ssize_t, body=Py_ssize_t, entry=_Pending, pending=dict,
                   name_at=Py_ssize_t, name_length=Py_ssize_t, end=Py_ssize_t, fid_at=Py_ssize_t,
                   write_at=Py_ssize_t, write_length=Py_ssize_t)
    cpdef quick(self, ts, frame, bytes data, Py_ssize_t at, Py_ssize_t length)
