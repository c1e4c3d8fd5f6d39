# Cython declarations for budget.py (the compiled core, sensor/compiled.py): the NetBIOS stage
# charges the message budget per buffered segment, so its counters are C fields.
cdef class ByteBudget:
    cdef public Py_ssize_t limit
    cdef public Py_ssize_t used
    cdef public Py_ssize_t peak
    cdef public Py_ssize_t evictions
    cdef public object _holders

    cpdef Py_ssize_t charge(self, holder, Py_ssize_t n, evict)
    cpdef release(self, holder)
