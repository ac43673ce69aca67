/* historymw._speedups: the sync `@recorded` hot path in C.
 *
 * This is an accelerator, not a second implementation: it handles only the
 * usual call (a scope that records everything, or samples by coin toss; model
 * and messages by position as {"role": str, "content": str} dicts; scalar
 * params from COMMON_PARAMS; a str result) and hands everything else to the
 * Python functions of capture.py, which stay the reference. The draft it
 * builds is the dict capture.start()'s inline fast path builds, key for key.
 *
 * Why C: on the 2-core machines this project targets one Python function call
 * costs ~0.1 us and a recorded call in pure Python ~2.9 us, over the 2 us
 * budget of DESIGN.md. Here the same work is a few hundred nanoseconds plus
 * the ring's append.
 *
 * Rules kept from capture.py: the wrapped function's result and exception
 * pass through untouched; an error inside historymw is counted (through the
 * `on_error` callable) and never raised into the call.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <time.h>

/* capture.py's modes (policy.py, scope.py). */
#define MODE_SKIP 0
#define MODE_FULL 1
#define MODE_SAMPLE 3

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;            /* __name__, __doc__, __wrapped__, ... (functools.update_wrapper) */
    PyObject *weakreflist;
    PyObject *fn;              /* the wrapped function */
    PyObject *spec;            /* draft.CallSpec */
    PyObject *current;         /* scope.CURRENT, the ContextVar */
    PyObject *state;           /* runtime.STATE (its .gen is the configuration generation) */
    PyObject *start;           /* capture.start: the general path */
    PyObject *finish;          /* capture.finish */
    PyObject *finish_result;   /* capture._finish_result */
    PyObject *head;            /* capture.head */
    PyObject *span_ids;        /* policy.active_span_ids */
    PyObject *random;          /* random.random */
    PyObject *clip;            /* plain.clip */
    PyObject *str_bytes;       /* draft.str_bytes */
    PyObject *on_error;        /* counts and logs an internal error */
    PyObject *common_params;   /* draft.COMMON_PARAMS */
    PyObject *template;        /* a draft with the fixed keys, in order: copied per call */
    Py_ssize_t model_pos, messages_pos, simple_upto;
    int has_extract;
    long base_bytes, pair_bytes, param_bytes;
} Recorder;

static PyObject *s_eff, *s_hot, *s_gen, *s_refresh, *s_role, *s_content_key,
    *s_started, *s_duration, *s_model, *s_pairs, *s_params, *s_size_bytes, *s_output_text, *s_stream,
    *s_trace_id, *s_span_id, *s_trace_flags, *s_otel_trace;

/* -- clocks: the ones time.perf_counter() and time.time() read ---------------- */

#if defined(__linux__)
static int
clock_seconds(clockid_t clock, double *out)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *out = (double)((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec) / 1e9;
    return 0;
}
#define PERF(out) clock_seconds(CLOCK_MONOTONIC, (out))
#define WALL(out) clock_seconds(CLOCK_REALTIME, (out))
#else
static PyObject *py_perf_counter, *py_time;
static int
call_clock(PyObject *clock, double *out)
{
    PyObject *v = PyObject_CallNoArgs(clock);
    if (v == NULL)
        return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}
#define PERF(out) call_clock(py_perf_counter, (out))
#define WALL(out) call_clock(py_time, (out))
#endif

/* -- the scope ----------------------------------------------------------------- */

/* The current scope's decision: its scope.Effective, and `Effective.hot`, the fields
 * read here as one tuple (one attribute lookup instead of one per field). */
enum { HOT_GEN, HOT_MODE, HOT_KEEP_ERRORS, HOT_RATE, HOT_CONTENT, HOT_MAX_CHARS, HOT_RECORD_LIMIT,
       HOT_LABELS, HOT_COMMIT, HOT_COUNT_SAMPLED_OUT, HOT_SIZE };

typedef struct {
    PyObject *eff;
    PyObject *hot;
} Scope;

#define HOT(sc, i) PyTuple_GET_ITEM((sc)->hot, (i))

static int
read_hot(Scope *sc)
{
    sc->hot = PyObject_GetAttr(sc->eff, s_hot);
    if (sc->hot == NULL)
        return -1;
    if (!PyTuple_CheckExact(sc->hot) || PyTuple_GET_SIZE(sc->hot) != HOT_SIZE) {
        PyErr_SetString(PyExc_TypeError, "Effective.hot is not the tuple _speedups.c expects");
        return -1;
    }
    return 0;
}

/* The scope in effect for this call, under the current configuration; -1 on error. */
static int
current_scope(Recorder *self, Scope *sc)
{
    PyObject *frame;
    sc->eff = sc->hot = NULL;
    if (PyContextVar_Get(self->current, NULL, &frame) < 0)
        return -1;
    if (frame == NULL) {
        PyErr_SetString(PyExc_LookupError, "historymw scope ContextVar has no value");
        return -1;
    }
    sc->eff = PyObject_GetAttr(frame, s_eff);
    int r = sc->eff == NULL ? -1 : read_hot(sc);
    if (r == 0) {
        PyObject *gen = PyObject_GetAttr(self->state, s_gen);
        r = gen == NULL ? -1 : PyObject_RichCompareBool(gen, HOT(sc, HOT_GEN), Py_EQ);
        Py_XDECREF(gen);
    }
    else if (sc->eff != NULL) {
        PyErr_Clear(); /* not a decision this code can read: decide again, as for a stale one */
        r = 0;
    }
    if (r == 0) { /* configure() ran since this scope decided: decide again */
        Py_CLEAR(sc->hot);
        Py_SETREF(sc->eff, PyObject_CallMethodNoArgs(frame, s_refresh));
        r = sc->eff == NULL ? -1 : read_hot(sc);
    }
    Py_DECREF(frame);
    return r < 0 ? -1 : 0;
}

static void
release_scope(Scope *sc)
{
    Py_CLEAR(sc->eff);
    Py_CLEAR(sc->hot);
}

static long
hot_long(const Scope *sc, int i)
{
    return PyLong_AsLong(HOT(sc, i));
}

/* -- small helpers ------------------------------------------------------------- */

/* The call as the caller made it, forwarded without repacking its arguments. */
typedef struct {
    PyObject *const *argv;
    size_t nargsf;
    PyObject *kwnames;
} Call;

static PyObject *
call_fn(Recorder *self, const Call *c)
{
    return PyObject_Vectorcall(self->fn, c->argv, c->nargsf, c->kwnames);
}

/* Count the pending exception as an internal error and clear it: fail-open, as the
 * `except Exception` blocks of capture.py. Returns -1, leaving it set, for what
 * those blocks let through too (KeyboardInterrupt, SystemExit): Ctrl-C still stops. */
static int
internal_error(Recorder *self)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *r = PyObject_CallOneArg(self->on_error, value ? value : Py_None);
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL && !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Clear(); /* on_error failing too must not reach the call either */
    return 0;
}

static int
str_size(Recorder *self, PyObject *s, long *out)
{
    if (PyUnicode_IS_ASCII(s)) {
        *out = (long)PyUnicode_GET_LENGTH(s) + 49;
        return 0;
    }
    PyObject *v = PyObject_CallOneArg(self->str_bytes, s);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* Params the usual call has: none, or only COMMON_PARAMS names with scalar values. */
static int
simple_params(Recorder *self, PyObject *kwargs)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        PyTypeObject *t = Py_TYPE(value);
        if (!(t == &PyLong_Type || t == &PyFloat_Type || t == &PyBool_Type || value == Py_None))
            return 0;
        int known = PySet_Contains(self->common_params, key);
        if (known <= 0) {
            PyErr_Clear(); /* an unhashable key: the general path says what it is */
            return 0;
        }
    }
    return 1;
}

/* -- the draft ----------------------------------------------------------------- */

/* The usual call's draft, as capture.start() builds it inline. Returns a new
 * dict; NULL with no exception set when the call is not the usual shape (the
 * general path takes it); NULL with an exception on an internal error. */
static PyObject *
fast_draft(Recorder *self, const Scope *sc, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n > self->simple_upto)
        return NULL;
    PyObject *model = (0 <= self->model_pos && self->model_pos < n) ? PyTuple_GET_ITEM(args, self->model_pos) : Py_None;
    PyObject *messages = (0 <= self->messages_pos && self->messages_pos < n)
        ? PyTuple_GET_ITEM(args, self->messages_pos) : Py_None;
    if (!PyUnicode_CheckExact(model) || !PyList_CheckExact(messages) || PyUnicode_GET_LENGTH(model) > 256)
        return NULL;
    if (PyDict_GET_SIZE(kwargs) && !simple_params(self, kwargs))
        return NULL;

    int content = PyObject_IsTrue(HOT(sc, HOT_CONTENT));
    if (content <= 0)
        return NULL; /* content off: the general path keeps the rest of the request */
    long max_chars = hot_long(sc, HOT_MAX_CHARS);
    if (max_chars == -1 && PyErr_Occurred())
        return NULL;
    long limit = hot_long(sc, HOT_RECORD_LIMIT);
    if (limit == -1 && PyErr_Occurred())
        return NULL;

    long size = self->base_bytes + (long)PyDict_GET_SIZE(kwargs) * self->param_bytes;
    /* A tuple, not a list: once the collector has seen that it holds only str, it untracks
     * it, so a queued draft is one object for later collections to walk, not two. */
    Py_ssize_t count = PyList_GET_SIZE(messages);
    PyObject *pairs = PyTuple_New(2 * count);
    if (pairs == NULL)
        return NULL;
    /* Items are re-read by index each turn: a dict key's __eq__ could run code. */
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyList_GET_SIZE(messages) != count)
            goto not_usual;
        PyObject *m = PyList_GET_ITEM(messages, i);
        if (!PyDict_CheckExact(m) || PyDict_GET_SIZE(m) != 2)
            goto not_usual;
        Py_INCREF(m);
        PyObject *role = PyDict_GetItemWithError(m, s_role);
        Py_XINCREF(role);
        PyObject *text = role ? PyDict_GetItemWithError(m, s_content_key) : NULL;
        Py_XINCREF(text);
        Py_DECREF(m);
        if (role == NULL || text == NULL || !PyUnicode_CheckExact(role) || !PyUnicode_CheckExact(text)
            || PyUnicode_GET_LENGTH(text) > max_chars) {
            Py_XDECREF(role);
            Py_XDECREF(text);
            if (PyErr_Occurred())
                goto error;
            goto not_usual;
        }
        long text_size;
        if (str_size(self, text, &text_size) < 0) {
            Py_DECREF(role);
            Py_DECREF(text);
            goto error;
        }
        size += self->pair_bytes + (long)PyUnicode_GET_LENGTH(role) + text_size;
        PyTuple_SET_ITEM(pairs, 2 * i, role); /* the references taken above */
        PyTuple_SET_ITEM(pairs, 2 * i + 1, text);
    }
    if (PyList_GET_SIZE(messages) != count)
        goto not_usual;
    if (size > limit)
        goto not_usual;

    double t0, wall;
    if (PERF(&t0) < 0 || WALL(&wall) < 0)
        goto error;
    PyObject *draft = PyDict_Copy(self->template);
    if (draft == NULL)
        goto error;
    PyObject *started = PyFloat_FromDouble(wall), *duration = PyFloat_FromDouble(t0),
        *size_obj = PyLong_FromLong(size);
    PyObject *stream = PyDict_GetItemWithError(kwargs, s_stream); /* borrowed */
    int failed = started == NULL || duration == NULL || size_obj == NULL || PyErr_Occurred()
        || PyDict_SetItem(draft, s_started, started) < 0 || PyDict_SetItem(draft, s_duration, duration) < 0
        || PyDict_SetItem(draft, s_model, model) < 0 || PyDict_SetItem(draft, s_pairs, pairs) < 0
        || PyDict_SetItem(draft, s_params, kwargs) < 0 || PyDict_SetItem(draft, s_size_bytes, size_obj) < 0
        || PyDict_SetItem(draft, s_stream, stream == Py_True ? Py_True : Py_False) < 0;
    Py_XDECREF(started);
    Py_XDECREF(duration);
    Py_XDECREF(size_obj);
    Py_DECREF(pairs);
    if (failed) {
        Py_DECREF(draft);
        return NULL;
    }
    return draft;

not_usual: /* no exception set: the general path takes the call */
error:     /* an exception set: an internal error */
    Py_DECREF(pairs);
    return NULL;
}

/* What capture.start() adds after the request: scope labels, the active span. */
static int
add_context(const Scope *sc, PyObject *draft, PyObject *span_ids)
{
    PyObject *labels = HOT(sc, HOT_LABELS);
    int r = labels == Py_None ? 0 : PyDict_Update(draft, labels);
    if (r < 0)
        return -1;
    PyObject *trace = PyDict_GetItemWithError(PyImport_GetModuleDict(), s_otel_trace);
    if (trace == NULL || trace == Py_None)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *ids = PyObject_CallNoArgs(span_ids);
    if (ids == NULL)
        return -1;
    if (PyTuple_CheckExact(ids) && PyTuple_GET_SIZE(ids) == 3) {
        r = (PyDict_SetItem(draft, s_trace_id, PyTuple_GET_ITEM(ids, 0)) < 0
             || PyDict_SetItem(draft, s_span_id, PyTuple_GET_ITEM(ids, 1)) < 0
             || PyDict_SetItem(draft, s_trace_flags, PyTuple_GET_ITEM(ids, 2)) < 0) ? -1 : 0;
    }
    Py_DECREF(ids);
    return r;
}

/* capture.finish_text(): the usual outcome of a FULL call, a str result. */
static int
finish_text(Recorder *self, PyObject *draft, const Scope *sc, PyObject *text)
{
    PyObject *kept = NULL, *r = NULL;
    int status = 0;
    double now;
    PyObject *t0 = PyDict_GetItemWithError(draft, s_duration);
    if (t0 == NULL || PERF(&now) < 0)
        goto error;
    double start = PyFloat_AsDouble(t0);
    if (start == -1.0 && PyErr_Occurred())
        goto error;
    PyObject *duration = PyFloat_FromDouble(now - start);
    if (duration == NULL)
        goto error;
    int failed = PyDict_SetItem(draft, s_duration, duration) < 0;
    Py_DECREF(duration);
    if (failed)
        goto error;

    int content = PyObject_IsTrue(HOT(sc, HOT_CONTENT));
    if (content < 0)
        goto error;
    if (content) {
        if (PyUnicode_GET_LENGTH(text) > 1024) {
            kept = PyObject_CallFunctionObjArgs(self->clip, text, HOT(sc, HOT_MAX_CHARS), NULL);
            if (kept == NULL)
                goto error;
        }
        else {
            kept = Py_NewRef(text);
        }
        long text_size;
        PyObject *size = PyDict_GetItemWithError(draft, s_size_bytes);
        if (size == NULL || !PyUnicode_Check(kept) || str_size(self, kept, &text_size) < 0)
            goto error;
        long total = PyLong_AsLong(size);
        if (total == -1 && PyErr_Occurred())
            goto error;
        PyObject *new_size = PyLong_FromLong(total + text_size);
        if (new_size == NULL)
            goto error;
        failed = PyDict_SetItem(draft, s_size_bytes, new_size) < 0 || PyDict_SetItem(draft, s_output_text, kept) < 0;
        Py_DECREF(new_size);
        if (failed)
            goto error;
    }
    r = PyObject_CallOneArg(HOT(sc, HOT_COMMIT), draft);
    if (r == NULL)
        goto error;
    goto done;
error:
    if (PyErr_Occurred() && internal_error(self) < 0)
        status = -1;
done:
    Py_XDECREF(kept);
    Py_XDECREF(r);
    return status;
}

/* -- the call ------------------------------------------------------------------ */

/* The head decision: MODE_SKIP or MODE_FULL, or another mode the general path handles. */
static long
decide(Recorder *self, const Scope *sc)
{
    long mode = hot_long(sc, HOT_MODE);
    if (mode == MODE_SKIP || mode == MODE_FULL || mode < 0)
        return mode;
    if (mode == MODE_SAMPLE && HOT(sc, HOT_KEEP_ERRORS) == Py_False) {
        PyObject *trace = PyDict_GetItemWithError(PyImport_GetModuleDict(), s_otel_trace);
        if (trace == NULL && PyErr_Occurred())
            return -1;
        if (trace == NULL || trace == Py_None) {
            /* No OpenTelemetry in this process: a coin toss, as head() tosses it. */
            PyObject *coin = PyObject_CallNoArgs(self->random);
            if (coin == NULL)
                return -1;
            double toss = PyFloat_AsDouble(coin);
            Py_DECREF(coin);
            double rate = PyFloat_AsDouble(HOT(sc, HOT_RATE));
            if (PyErr_Occurred())
                return -1;
            if (toss < rate)
                return MODE_FULL;
            PyObject *r = PyObject_CallNoArgs(HOT(sc, HOT_COUNT_SAMPLED_OUT));
            if (r == NULL)
                return -1;
            Py_DECREF(r);
            return MODE_SKIP;
        }
    }
    PyObject *m = PyObject_CallOneArg(self->head, sc->eff);
    if (m == NULL)
        return -1;
    mode = PyLong_AsLong(m);
    Py_DECREF(m);
    return mode;
}

/* The call's arguments as capture.py's functions take them: (args, kwargs). */
static int
pack_arguments(const Call *c, PyObject **args, PyObject **kwargs)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(c->nargsf);
    *args = PyTuple_New(nargs);
    *kwargs = PyDict_New();
    if (*args == NULL || *kwargs == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(*args, i, Py_NewRef(c->argv[i]));
    Py_ssize_t nkw = c->kwnames ? PyTuple_GET_SIZE(c->kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        if (PyDict_SetItem(*kwargs, PyTuple_GET_ITEM(c->kwnames, i), c->argv[nargs + i]) < 0)
            goto error;
    }
    return 0;
error:
    Py_CLEAR(*args);
    Py_CLEAR(*kwargs);
    return -1;
}

/* A recorded call: the draft, the call, the outcome. `mode` is FULL or TAIL. */
static PyObject *
record(Recorder *self, const Scope *sc, long mode, const Call *c)
{
    PyObject *args, *kwargs;
    if (pack_arguments(c, &args, &kwargs) < 0)
        return internal_error(self) < 0 ? NULL : call_fn(self, c);
    PyObject *draft = mode == MODE_FULL ? fast_draft(self, sc, args, kwargs) : NULL;
    if (draft != NULL && add_context(sc, draft, self->span_ids) < 0)
        Py_CLEAR(draft);
    if (draft == NULL && !PyErr_Occurred()) { /* not the usual call: capture.start() takes it */
        PyObject *mode_obj = PyLong_FromLong(mode);
        if (mode_obj != NULL) {
            draft = PyObject_CallFunctionObjArgs(self->start, sc->eff, self->spec, mode_obj, args, kwargs, NULL);
            Py_DECREF(mode_obj);
        }
        if (draft == Py_None) /* start() met an internal error, and counted it */
            Py_CLEAR(draft);
    }
    Py_DECREF(args);
    Py_DECREF(kwargs);
    if (draft == NULL) /* the call goes on, unrecorded */
        return PyErr_Occurred() && internal_error(self) < 0 ? NULL : call_fn(self, c);

    PyObject *result = call_fn(self, c);
    if (result == NULL) {
        /* The call failed: record it, then re-raise exactly what it raised. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        PyObject *r = PyObject_CallFunctionObjArgs(self->finish, draft, self->spec, sc->eff, Py_None,
                                                   value ? value : Py_None, NULL);
        Py_XDECREF(r);
        if (r == NULL && internal_error(self) < 0) { /* Ctrl-C while recording: that propagates */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        else {
            PyErr_Restore(type, value, tb);
        }
    }
    else if (PyUnicode_CheckExact(result) && mode == MODE_FULL && !self->has_extract) {
        if (finish_text(self, draft, sc, result) < 0)
            Py_CLEAR(result);
    }
    else { /* any other result, or a stream: capture._finish_result() */
        Py_SETREF(result, PyObject_CallFunctionObjArgs(self->finish_result, draft, self->spec, sc->eff, result,
                                                       NULL));
    }
    Py_DECREF(draft);
    return result;
}

/* The wrapper itself: a call of the decorated function lands here. */
static PyObject *
recorder_vectorcall(PyObject *op, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    Recorder *self = (Recorder *)op;
    Call c = {argv, nargsf, kwnames};
    Scope sc;
    long mode = current_scope(self, &sc) < 0 ? -1 : decide(self, &sc);
    PyObject *result;
    if (mode == MODE_SKIP || mode < 0) {
        result = PyErr_Occurred() && internal_error(self) < 0 ? NULL : call_fn(self, &c);
    }
    else {
        result = record(self, &sc, mode, &c);
    }
    release_scope(&sc);
    return result;
}

/* -- the type ------------------------------------------------------------------ */

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->fn);
    Py_VISIT(self->spec);
    Py_VISIT(self->current);
    Py_VISIT(self->state);
    Py_VISIT(self->start);
    Py_VISIT(self->finish);
    Py_VISIT(self->finish_result);
    Py_VISIT(self->head);
    Py_VISIT(self->span_ids);
    Py_VISIT(self->random);
    Py_VISIT(self->clip);
    Py_VISIT(self->str_bytes);
    Py_VISIT(self->on_error);
    Py_VISIT(self->common_params);
    Py_VISIT(self->template);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->spec);
    Py_CLEAR(self->current);
    Py_CLEAR(self->state);
    Py_CLEAR(self->start);
    Py_CLEAR(self->finish);
    Py_CLEAR(self->finish_result);
    Py_CLEAR(self->head);
    Py_CLEAR(self->span_ids);
    Py_CLEAR(self->random);
    Py_CLEAR(self->clip);
    Py_CLEAR(self->str_bytes);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->common_params);
    Py_CLEAR(self->template);
    return 0;
}

static void
recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "spec", "current", "state", "start", "finish", "finish_result", "head",
                             "span_ids", "random", "clip", "str_bytes", "on_error", "common_params",
                             "template", "model_pos", "messages_pos", "simple_upto", "has_extract",
                             "base_bytes", "pair_bytes", "param_bytes", NULL};
    PyObject *objs[15];
    Py_ssize_t model_pos, messages_pos, simple_upto;
    int has_extract;
    long base_bytes, pair_bytes, param_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOOOOOOO!O!nnnplll:Recorder", kwlist, &objs[0],
                                     &objs[1], &objs[2], &objs[3], &objs[4], &objs[5], &objs[6], &objs[7],
                                     &objs[8], &objs[9], &objs[10], &objs[11], &objs[12], &PyFrozenSet_Type,
                                     &objs[13], &PyDict_Type, &objs[14], &model_pos, &messages_pos,
                                     &simple_upto, &has_extract, &base_bytes, &pair_bytes, &param_bytes))
        return NULL;
    if (!PyContextVar_CheckExact(objs[2])) {
        PyErr_SetString(PyExc_TypeError, "current must be a ContextVar");
        return NULL;
    }
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    PyObject **slots[15] = {&self->fn, &self->spec, &self->current, &self->state, &self->start, &self->finish,
                            &self->finish_result, &self->head, &self->span_ids, &self->random, &self->clip,
                            &self->str_bytes, &self->on_error, &self->common_params, &self->template};
    for (int i = 0; i < 15; i++)
        *slots[i] = Py_NewRef(objs[i]);
    self->model_pos = model_pos;
    self->messages_pos = messages_pos;
    self->simple_upto = simple_upto;
    self->has_extract = has_extract;
    self->base_bytes = base_bytes;
    self->pair_bytes = pair_bytes;
    self->param_bytes = param_bytes;
    self->vectorcall = recorder_vectorcall;
    return (PyObject *)self;
}

/* Behave like the function it wraps, as functools.lru_cache's C wrapper does:
 * bind as a method, pickle and copy by name, show the wrapped name. */
static PyObject *
recorder_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static PyObject *
recorder_qualname(PyObject *self)
{
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyObject *
recorder_repr(PyObject *self)
{
    PyObject *name = recorder_qualname(self);
    if (name == NULL) {
        PyErr_Clear();
        return PyUnicode_FromFormat("<recorded function at %p>", self);
    }
    PyObject *r = PyUnicode_FromFormat("<recorded function %S at %p>", name, self);
    Py_DECREF(name);
    return r;
}

static PyObject *
recorder_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return recorder_qualname(self);
}

static PyObject *
recorder_copy(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self);
}

static PyObject *
recorder_deepcopy(PyObject *self, PyObject *Py_UNUSED(memo))
{
    return Py_NewRef(self);
}

static PyMethodDef recorder_methods[] = {
    {"__reduce__", recorder_reduce, METH_NOARGS, NULL},
    {"__copy__", recorder_copy, METH_NOARGS, NULL},
    {"__deepcopy__", recorder_deepcopy, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef recorder_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "historymw._speedups.Recorder",
    .tp_doc = "A @recorded sync function: the C hot path, capture.py's functions for the rest.",
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_descr_get = recorder_descr_get,
    .tp_repr = recorder_repr,
    .tp_methods = recorder_methods,
    .tp_getset = recorder_getset,
    .tp_dictoffset = offsetof(Recorder, dict),
    .tp_weaklistoffset = offsetof(Recorder, weakreflist),
    .tp_new = recorder_new,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "historymw._speedups",
    .m_doc = "The C hot path of @recorded (optional; capture.py is the reference).",
    .m_size = -1,
};

#define INTERN(var, text)                                  \
    do {                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL) \
            return NULL;                                   \
    } while (0)

PyMODINIT_FUNC
PyInit__speedups(void)
{
    INTERN(s_eff, "eff");
    INTERN(s_hot, "hot");
    INTERN(s_gen, "gen");
    INTERN(s_refresh, "refresh");
    INTERN(s_role, "role");
    INTERN(s_content_key, "content");
    INTERN(s_started, "started");
    INTERN(s_duration, "duration");
    INTERN(s_model, "model");
    INTERN(s_pairs, "_pairs");
    INTERN(s_params, "params");
    INTERN(s_size_bytes, "size_bytes");
    INTERN(s_output_text, "output_text");
    INTERN(s_stream, "stream");
    INTERN(s_trace_id, "trace_id");
    INTERN(s_span_id, "span_id");
    INTERN(s_trace_flags, "trace_flags");
    INTERN(s_otel_trace, "opentelemetry.trace");
#if !defined(__linux__)
    PyObject *time_mod = PyImport_ImportModule("time");
    if (time_mod == NULL)
        return NULL;
    py_perf_counter = PyObject_GetAttrString(time_mod, "perf_counter");
    py_time = PyObject_GetAttrString(time_mod, "time");
    Py_DECREF(time_mod);
    if (py_perf_counter == NULL || py_time == NULL)
        return NULL;
#endif
    if (PyType_Ready(&RecorderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Recorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
