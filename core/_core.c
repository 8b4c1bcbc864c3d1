/*
 * _core.c - the CPython binding of the anon_vma core: three functions, no state.
 *
 *   run(program_bytes, kernel, seed, check, memory_limit) -> dict   (GIL released while it runs)
 *   generations() -> list of dicts, one per row of the generation table
 *   struct_sizes() -> dict of the simulator's own object sizes (for memory estimates)
 *
 * core/runner.py checks types and shapes first; this file trusts that the program buffer is a
 * whole number of 24-byte ops. Errors map to core.errors.ProgramError, InvariantError and
 * MemoryError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

_Static_assert(sizeof(struct prog_op) == 24, "struct prog_op must match core.PROGRAM_DTYPE");

static PyObject *program_error;
static PyObject *invariant_error;

static int set_int(PyObject *d, const char *key, unsigned long long v)
{
	PyObject *o = PyLong_FromUnsignedLongLong(v);
	if (!o)
		return -1;
	int r = PyDict_SetItemString(d, key, o);
	Py_DECREF(o);
	return r;
}

static int set_float(PyObject *d, const char *key, double v)
{
	PyObject *o = PyFloat_FromDouble(v);
	if (!o)
		return -1;
	int r = PyDict_SetItemString(d, key, o);
	Py_DECREF(o);
	return r;
}

/* Nearest-rank percentile: the k-th smallest walk, k = ceil(num/den * walks). */
static uint64_t hist_rank(const struct sim *s, uint64_t num, uint64_t den)
{
	uint64_t walks = s->count.walks;
	if (!walks)
		return 0;
	uint64_t k = (num * walks + den - 1) / den, seen = 0;
	for (size_t e = 0; e < s->hist_len; e++) {
		seen += s->hist[e];
		if (seen >= k)
			return e;
	}
	return 0;
}

static PyObject *results_dict(const struct sim *s)
{
	const struct generation *g = s->gen;
	const struct sim_counters *c = &s->count;
	const struct sim_snapshot *snap = &s->snap;
	double walks = (double)c->walks;
	size_t max_e = 0;
	for (size_t e = 0; e < s->hist_len; e++)
		if (s->hist[e])
			max_e = e;

	PyObject *d = PyDict_New();
	if (!d)
		return NULL;
	PyObject *hist = PyList_New((Py_ssize_t)(c->walks ? max_e + 1 : 1));
	if (!hist)
		goto fail;
	for (size_t e = 0; e < (size_t)PyList_GET_SIZE(hist); e++) {
		PyObject *o = PyLong_FromUnsignedLongLong(e < s->hist_len ? s->hist[e] : 0);
		if (!o) {
			Py_DECREF(hist);
			goto fail;
		}
		PyList_SET_ITEM(hist, (Py_ssize_t)e, o);
	}
	int r = PyDict_SetItemString(d, "entries_hist", hist);
	Py_DECREF(hist);
	if (r)
		goto fail;

	if (set_int(d, "walks", c->walks) || set_int(d, "entries_total", c->entries) ||
	    set_int(d, "calls_total", c->calls) || set_int(d, "hits_total", c->hits) ||
	    set_float(d, "entries_mean", c->walks ? (double)c->entries / walks : NAN) ||
	    set_float(d, "calls_mean", c->walks ? (double)c->calls / walks : NAN) ||
	    set_float(d, "hits_mean", c->walks ? (double)c->hits / walks : NAN) ||
	    set_int(d, "entries_p50", hist_rank(s, 50, 100)) ||
	    set_int(d, "entries_p99", hist_rank(s, 99, 100)) ||
	    set_int(d, "entries_max", c->walks ? max_e : 0) ||
	    set_int(d, "processes", snap->processes) || set_int(d, "vmas", snap->vmas) ||
	    set_int(d, "anon_vmas", snap->anon_vmas) || set_int(d, "avcs", snap->avcs) ||
	    set_int(d, "pages", snap->pages) || set_int(d, "max_chain", snap->max_chain) ||
	    set_int(d, "rmap_bytes", snap->anon_vmas * g->sizeof_anon_vma + snap->avcs * g->sizeof_avc) ||
	    set_int(d, "vma_bytes", snap->vmas * g->sizeof_vma) ||
	    set_int(d, "faults", c->faults) || set_int(d, "cows", c->cows) ||
	    set_int(d, "reuses", c->reuses) || set_int(d, "forks", c->forks) ||
	    set_int(d, "exits", c->exits) || set_int(d, "peak_bytes", s->peak_bytes) ||
	    set_float(d, "sim_seconds", s->sim_seconds) ||
	    set_float(d, "scan_seconds", s->scan_seconds))
		goto fail;
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static PyObject *core_run(PyObject *self, PyObject *args)
{
	(void)self;
	Py_buffer view;
	const char *kernel;
	unsigned long long seed, limit;
	int check;
	if (!PyArg_ParseTuple(args, "y*sKpK", &view, &kernel, &seed, &check, &limit))
		return NULL;

	const struct generation *gen = generation_find(kernel);
	if (!gen || view.len % (Py_ssize_t)sizeof(struct prog_op)) {
		PyBuffer_Release(&view);
		PyErr_Format(PyExc_ValueError, gen ? "program buffer is not a whole number of ops"
						   : "unknown kernel generation %s", kernel);
		return NULL;
	}
	/* A private copy: the caller's array may change while the GIL is released. */
	size_t nr_ops = (size_t)view.len / sizeof(struct prog_op);
	struct prog_op *ops = malloc(nr_ops ? (size_t)view.len : 1);
	if (!ops) {
		PyBuffer_Release(&view);
		return PyErr_NoMemory();
	}
	memcpy(ops, view.buf, (size_t)view.len);
	PyBuffer_Release(&view);

	struct sim *s = malloc(sizeof(*s));
	if (!s) {
		free(ops);
		return PyErr_NoMemory();
	}
	sim_init(s, gen, seed, check, (size_t)limit);
	int err;
	Py_BEGIN_ALLOW_THREADS
	err = sim_run_program(s, ops, nr_ops);
	Py_END_ALLOW_THREADS
	free(ops);

	PyObject *result = NULL;
	if (err == SIM_ENOMEM)
		PyErr_SetString(PyExc_MemoryError, s->err.msg);
	else if (err == SIM_EBUG)
		PyErr_SetString(invariant_error, s->err.msg);
	else if (err)
		PyErr_SetString(program_error, s->err.msg);
	else
		result = results_dict(s);
	sim_destroy(s);
	free(s);
	return result;
}

static PyObject *core_generations(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	PyObject *list = PyList_New(0);
	if (!list)
		return NULL;
	for (size_t i = 0; i < sim_nr_generations; i++) {
		const struct generation *g = &sim_generations[i];
		PyObject *row = Py_BuildValue(
			"{s:s,s:s,s:O,s:O,s:s,s:i,s:i,s:i,s:s}",
			"name", g->name,
			"structure", rmap_structure_name(g->structure),
			"prepare_at_head", g->prepare_at_head ? Py_True : Py_False,
			"root", g->has_root ? Py_True : Py_False,
			"lock", rmap_lock_name(g->lock),
			"sizeof_anon_vma", (int)g->sizeof_anon_vma,
			"sizeof_avc", (int)g->sizeof_avc,
			"sizeof_vma", (int)g->sizeof_vma,
			"source", g->source);
		if (!row || PyList_Append(list, row)) {
			Py_XDECREF(row);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(row);
	}
	return list;
}

static PyObject *core_struct_sizes(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
			     "mm", (Py_ssize_t)sizeof(struct mm),
			     "vma", (Py_ssize_t)sizeof(struct vma),
			     "anon_vma", (Py_ssize_t)sizeof(struct anon_vma),
			     "anon_vma_chain", (Py_ssize_t)sizeof(struct anon_vma_chain),
			     "page", (Py_ssize_t)sizeof(struct page),
			     "pte", (Py_ssize_t)sizeof(pte_t),
			     "slot_index", (Py_ssize_t)sizeof(idx_t));
}

static PyMethodDef core_methods[] = {
	{"run", core_run, METH_VARARGS,
	 "run(program_bytes, kernel, seed, check, memory_limit) -> dict (use core.run)"},
	{"generations", core_generations, METH_NOARGS, "The generation table, one dict per row."},
	{"struct_sizes", core_struct_sizes, METH_NOARGS, "Bytes of the simulator's own objects."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT, "core._core", "The compiled anon_vma core.", -1, core_methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__core(void)
{
	PyObject *errors = PyImport_ImportModule("core.errors");
	if (!errors)
		return NULL;
	program_error = PyObject_GetAttrString(errors, "ProgramError");
	invariant_error = PyObject_GetAttrString(errors, "InvariantError");
	Py_DECREF(errors);
	if (!program_error || !invariant_error)
		return NULL;
	return PyModule_Create(&core_module);
}
