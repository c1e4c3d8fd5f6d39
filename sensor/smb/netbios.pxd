# Cython declarations for netbios.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.budget cimport ByteBudget

cdef object _NOTHING_LEFT
cdef class NbssStream:
    cdef public object _wants_whole
    cdef public object stats
    cdef public ByteBudget _budget     # charged per buffered segment: C calls
    cdef public bint _over_budget
    cdef public bytearray _buf
    cdef public Py_ssize_t _length
    cdef public object _whole
    cdef public Py_ssize_t _skip
    cdef public bint _hunting
    cdef public bytes _tail
    cdef public Py_ssize_t _hunted
    cdef public bint _dead

    # Called per segment from feed, and by the SMB fast path: C calls, not Python method calls
    cdef _reset(self)
    cdef Py_ssize_t room(self)
    cdef bint fits(self, Py_ssize_t n)
    cdef start(self, bytes data, Py_ssize_t length)
    cdef extend(self, bytes data)
    cdef bytes _complete(self)
    cdef _keep(self, data)
    @cython.locals(n=Py_ssize_t)
    cdef _take(self, mv, Py_ssize_t upto)
    @cython.locals(length=Py_ssize_t)
    cdef _frame(self, mv, list items)
