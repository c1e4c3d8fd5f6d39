# Cython declarations for tcp.py (the compiled core, sensor/compiled.py): the attributes
# the per-packet path reads become C fields. The .py is the source of both builds.
cdef class TcpDirection:
    cdef public object flow
    cdef public bint from_client
    cdef public object limits
    cdef public object stats
    cdef public object budget
    cdef public object next
    cdef public object acked
    cdef public object fin_at
    cdef public list _starts
    cdef public list _datas
    cdef public Py_ssize_t _buffered
    cdef public Py_ssize_t _charged
