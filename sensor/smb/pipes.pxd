# Cython declarations for pipes.py (the compiled core, sensor/compiled.py): the SMB2 header
# triage asks the pipe table per message whether a handle is known: C calls.
cdef class PipeTable:
    cdef public object flow
    cdef public object stats
    cdef public dict _pipes
    cdef public dict _candidates

    cpdef get(self, handle)
    cpdef bint known(self, handle)
    cpdef bint unknown(self, handle)
