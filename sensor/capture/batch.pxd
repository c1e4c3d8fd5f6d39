# Cython declarations for batch.py (the compiled core, sensor/compiled.py): the record walk's
# window as a C pointer, its fields as C integers, the pipeline's per-frame entry called in C.
cimport cython
from sensor.pipeline cimport Pipeline

cdef Py_ssize_t RECORD_HEADER

@cython.locals(value="unsigned long long")
cdef unsigned long long _u32(const unsigned char* buf, Py_ssize_t at, bint little)

@cython.locals(view="const unsigned char[::1]", buf="const unsigned char*", end=Py_ssize_t,
               fed=Py_ssize_t, captured=Py_ssize_t, caplen="unsigned long long", ts=double,
               start=Py_ssize_t)
cpdef tuple feed_records(Pipeline pipeline, window, Py_ssize_t at, Py_ssize_t frame, bint little, double scale,
                         Py_ssize_t linktype, Py_ssize_t max_record, list out)
