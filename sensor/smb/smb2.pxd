# Cython declarations for smb2.py (the compiled core, sensor/compiled.py).
cimport cython
from sensor.smb.protocol cimport SmbProtocolState

# What the triage compares per message, as C constants (the command codes and status other
# modules import stay Python's)
cdef Py_ssize_t HEADER_SIZE, CLOSE, CANCEL, PENDING_LIMIT, _B
cdef unsigned long long FLAGS_SERVER_TO_REDIR, FLAGS_ASYNC_COMMAND
cdef unsigned long long STATUS_SUCCESS, STATUS_BUFFER_OVERFLOW, STATUS_MORE_PROCESSING_REQUIRED
cdef unsigned long long UNSOLICITED_MESSAGE_ID
# ... and the command sets and FileId offsets it consults, as typed module variables (no
# lookup by name; no other module imports them either)
cdef unsigned long long _PARSED_REQUESTS, _PARSED_RESPONSES
cdef Py_ssize_t COMMANDS
cdef tuple _HANDLE_AT
cdef bytes RELATED_FILE_ID

cdef Py_ssize_t le16(const unsigned char* buf, Py_ssize_t at)
@cython.locals(value="unsigned long long")
cdef unsigned long long le32(const unsigned char* buf, Py_ssize_t at)
cdef unsigned long long le64(const unsigned char* buf, Py_ssize_t at)
cdef bint _carries_body(Py_ssize_t command, unsigned long long status)
cdef bint _among(unsigned long long commands, Py_ssize_t command)
cdef Py_ssize_t _handle_at(Py_ssize_t command)

# A request's entry lives from its request to its response: a few dozen are alive at a time,
# so the allocator reuses them.
@cython.freelist(64)
cdef class _Pending:
    cdef public Py_ssize_t command
    cdef public unsigned long long session_id
    cdef public unsigned long long tree_id
    cdef public object file_id
    cdef public _Pending via
    cdef public object auth
    cdef public object path
    cdef public bytes raw_name
    cdef public bint is_pipe
    cdef public list deferred
    cdef public bint transceive

@cython.locals(entry=_Pending)
cdef _Pending _new_pending(Py_ssize_t command, unsigned long long session_id, unsigned long long tree_id)

cdef class Smb2Protocol(SmbProtocolState):
    cdef public SmbProtocolState smb1

    cpdef Py_ssize_t connection_held(self)
    @cython.locals(status="unsigned long long", command=Py_ssize_t, flags="unsigned long long",
                   body=Py_ssize_t, entry=_Pending, pending=dict, key=object,
                   name_at=Py_ssize_t, end=Py_ssize_t, fid_at=Py_ssize_t, handle_at=Py_ssize_t, write_at=Py_ssize_t,
                   tid="unsigned long long", sid="unsigned long long",
                   write_length=Py_ssize_t)
    cdef quick(self, ts, Py_ssize_t frame, const unsigned char* buf, Py_ssize_t at, Py_ssize_t length)
