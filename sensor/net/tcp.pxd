# Cython declarations for tcp.py (the compiled core, sensor/compiled.py): the attributes
# the per-packet path reads become C fields. The .py is the source of both builds.
cdef class TcpDirection:
    cdef public object flow
    cdef public bint from_client
    cdef public object limits
    cdef public object stats
    cdef public object budget
    cdef public Py_ssize_t next      # UNSET until known (tcp.py)
    cdef public Py_ssize_t acked
    cdef public Py_ssize_t fin_at
    cdef public list _starts
    cdef public list _datas
    cdef public Py_ssize_t _buffered
    cdef public Py_ssize_t _charged
