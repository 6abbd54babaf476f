// A sluice plugin in C: a latency histogram with fixed buckets.
//
// Outputs one cumulative count per configured upper bound (`le_500`: values
// at or below 500, as Prometheus histograms count) and the total. Buckets
// are fixed by the config, so accumulators merge by adding counts, exactly.
//
// Bindings come from `wit-bindgen c` (aggregator_plugin.h); the generated
// code hands every argument over to us (we free it) and frees what we
// return after the host has read it (we allocate it with malloc).
// scripts/common.sh (build_language_plugin c) builds it.

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "aggregator_plugin.h"

#define STATE_VERSION 1
#define MAX_BOUNDS 64

typedef exports_sluice_plugin_aggregator_aggregation_t aggregation_t;
typedef exports_sluice_plugin_aggregator_accumulator_t accumulator_t;

// The configured bucket bounds, strictly increasing, and each bound as the
// config wrote it (output names use it: no printf, whose stdio would make
// the module import WASI).
struct exports_sluice_plugin_aggregator_aggregation_t {
    size_t bounds_len;
    double bounds[MAX_BOUNDS];
    char text[MAX_BOUNDS][32];
};

// Per window: values in each bucket (not cumulative) and in none (above
// the last bound).
struct exports_sluice_plugin_aggregator_accumulator_t {
    const aggregation_t *config;
    uint64_t total;
    uint64_t buckets[MAX_BOUNDS];
};

static const char DEFAULT_CONFIG[] = "{\"bounds\": [100, 250, 500, 1000, 2500, 5000, 10000]}";

void exports_sluice_plugin_aggregator_info(exports_sluice_plugin_aggregator_plugin_info_t *ret) {
    aggregator_plugin_string_dup(&ret->name, "histogram");
    aggregator_plugin_string_dup(&ret->version, "0.1.0");
    aggregator_plugin_string_dup(&ret->description,
                                 "Cumulative counts of the values at or below each of a fixed list of "
                                 "bucket bounds (Prometheus-style `le` buckets), and the total.");
    ret->state_version = STATE_VERSION;
    ret->mergeable = true;
    ret->commutative = true;
    aggregator_plugin_string_dup(&ret->config_help,
                                 "{\"bounds\": [100, 250, 500, 1000, 2500, 5000, 10000]} (the default): "
                                 "increasing finite upper bounds, at most 64");
}

// ---------------------------------------------------------------------------
// The config: `{}` or `{"bounds": [numbers]}`, nothing else.

static const char *skip_space(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

// Parses the config into `agg`; on failure returns a message (static text).
static const char *parse_config(const char *p, const char *end, aggregation_t *agg) {
    p = skip_space(p, end);
    if (p == end || *p++ != '{') return "config must be a JSON object";
    p = skip_space(p, end);
    if (p < end && *p == '}') {
        p = skip_space(p + 1, end);
        return p == end ? NULL : "config: unexpected text after the object";
    }
    static const char key[] = "\"bounds\"";
    if ((size_t)(end - p) < sizeof key - 1 || memcmp(p, key, sizeof key - 1) != 0) {
        // Name the key that was given (up to its closing quote, or 40 bytes).
        static char message[96];
        const char *name = p < end && *p == '"' ? p + 1 : p;
        size_t n = 0;
        while (name + n < end && n < 40 && name[n] != '"') n++;
        memcpy(message, "unknown key `", 13);
        memcpy(message + 13, name, n);
        memcpy(message + 13 + n, "` (expected `bounds`)", 22);
        return message;
    }
    p = skip_space(p + sizeof key - 1, end);
    if (p == end || *p++ != ':') return "bounds: expected `:`";
    p = skip_space(p, end);
    if (p == end || *p++ != '[') return "bounds: must be a list of numbers";
    agg->bounds_len = 0;
    p = skip_space(p, end);
    if (p < end && *p == ']') return "bounds: must not be empty";
    for (;;) {
        // strtod needs a terminated string: copy one number out.
        char *number = agg->text[agg->bounds_len < MAX_BOUNDS ? agg->bounds_len : MAX_BOUNDS - 1];
        size_t n = 0;
        while (p < end && n < sizeof agg->text[0] - 1 && strchr("+-0123456789.eE", *p)) number[n++] = *p++;
        number[n] = '\0';
        char *stop;
        double bound = strtod(number, &stop);
        if (n == 0 || *stop != '\0' || !isfinite(bound)) return "bounds: must be a list of finite numbers";
        if (agg->bounds_len == MAX_BOUNDS) return "bounds: at most 64";
        if (agg->bounds_len > 0 && bound <= agg->bounds[agg->bounds_len - 1])
            return "bounds: must be strictly increasing";
        agg->bounds[agg->bounds_len++] = bound;
        p = skip_space(p, end);
        if (p < end && *p == ',') {
            p = skip_space(p + 1, end);
            continue;
        }
        if (p < end && *p == ']') break;
        return "bounds: expected `,` or `]`";
    }
    p = skip_space(p + 1, end);
    if (p == end || *p++ != '}') return "unknown key in config after `bounds` (only `bounds` is taken)";
    p = skip_space(p, end);
    return p == end ? NULL : "config: unexpected text after the object";
}

bool exports_sluice_plugin_aggregator_static_aggregation_open(
    aggregator_plugin_string_t *config, exports_sluice_plugin_aggregator_own_aggregation_t *ret,
    aggregator_plugin_string_t *err) {
    aggregation_t *agg = calloc(1, sizeof *agg);
    const char *text = (const char *)config->ptr;
    const char *problem = agg ? parse_config(text, text + config->len, agg) : "out of memory";
    // `{}` leaves bounds_len at 0: the defaults.
    if (agg && !problem && agg->bounds_len == 0)
        problem = parse_config(DEFAULT_CONFIG, DEFAULT_CONFIG + sizeof DEFAULT_CONFIG - 1, agg);
    aggregator_plugin_string_free(config);
    if (problem) {
        free(agg);
        aggregator_plugin_string_dup(err, problem);
        return false;
    }
    *ret = exports_sluice_plugin_aggregator_aggregation_new(agg);
    return true;
}

void exports_sluice_plugin_aggregator_aggregation_destructor(aggregation_t *rep) { free(rep); }

// `prefix` then `number`, into `out` (size 64). For names (`le_500`,
// `le_0.25`, `le_m10` for -10, `le_1e6`), which allow only [a-z0-9_.],
// `as_name` turns `-` into `m`, drops `+` and lowers `E`.
static void join(char *out, const char *prefix, const char *number, bool as_name) {
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (const char *c = number; *c && n < 63; c++) {
        if (!as_name) out[n++] = *c;
        else if (*c == '-') out[n++] = 'm';
        else if (*c == 'E') out[n++] = 'e';
        else if (*c != '+') out[n++] = *c;
    }
    out[n] = '\0';
}

void exports_sluice_plugin_aggregator_method_aggregation_outputs(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self,
    exports_sluice_plugin_aggregator_list_output_spec_t *ret) {
    size_t len = self->bounds_len + 1;
    exports_sluice_plugin_aggregator_output_spec_t *specs = calloc(len, sizeof *specs);
    for (size_t i = 0; i < self->bounds_len; i++) {
        char name[64], description[64];
        join(name, "le_", self->text[i], true);
        join(description, "values at or below ", self->text[i], false);
        aggregator_plugin_string_dup(&specs[i].name, name);
        specs[i].kind = SLUICE_PLUGIN_TYPES_OUTPUT_KIND_INTEGER;
        aggregator_plugin_string_dup(&specs[i].description, description);
    }
    aggregator_plugin_string_dup(&specs[len - 1].name, "count");
    specs[len - 1].kind = SLUICE_PLUGIN_TYPES_OUTPUT_KIND_INTEGER;
    aggregator_plugin_string_dup(&specs[len - 1].description, "all values");
    ret->ptr = specs;
    ret->len = len;
}

static accumulator_t *new_accumulator(const aggregation_t *config) {
    accumulator_t *acc = calloc(1, sizeof *acc);
    if (acc) acc->config = config;
    return acc;
}

exports_sluice_plugin_aggregator_own_accumulator_t exports_sluice_plugin_aggregator_method_aggregation_create(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self) {
    accumulator_t *acc = new_accumulator(self);
    if (!acc) abort();
    return exports_sluice_plugin_aggregator_accumulator_new(acc);
}

// State bytes: total, then one count per bound, each a little-endian u64
// (wasm32 is little-endian, so the counts are copied as they lie).
bool exports_sluice_plugin_aggregator_method_aggregation_restore(
    exports_sluice_plugin_aggregator_borrow_aggregation_t self, aggregator_plugin_list_u8_t *state,
    uint32_t state_version, exports_sluice_plugin_aggregator_own_accumulator_t *ret,
    aggregator_plugin_string_t *err) {
    size_t want = (self->bounds_len + 1) * sizeof(uint64_t);
    const char *problem = NULL;
    if (state_version != STATE_VERSION) problem = "unknown state version (this plugin writes version 1)";
    else if (state->len != want) problem = "state does not match the configured number of buckets";
    accumulator_t *acc = problem ? NULL : new_accumulator(self);
    if (!problem && !acc) problem = "out of memory";
    if (problem) {
        aggregator_plugin_list_u8_free(state);
        aggregator_plugin_string_dup(err, problem);
        return false;
    }
    memcpy(&acc->total, state->ptr, sizeof(uint64_t));
    memcpy(acc->buckets, state->ptr + sizeof(uint64_t), self->bounds_len * sizeof(uint64_t));
    aggregator_plugin_list_u8_free(state);
    *ret = exports_sluice_plugin_aggregator_accumulator_new(acc);
    return true;
}

void exports_sluice_plugin_aggregator_accumulator_destructor(accumulator_t *rep) { free(rep); }

void exports_sluice_plugin_aggregator_method_accumulator_add(
    exports_sluice_plugin_aggregator_borrow_accumulator_t self, aggregator_plugin_list_f64_t *values,
    exports_sluice_plugin_aggregator_list_timestamp_t *times) {
    const double *bounds = self->config->bounds;
    size_t len = self->config->bounds_len;
    for (size_t i = 0; i < values->len; i++) {
        double v = values->ptr[i];
        // Bounds are few: a linear scan beats a binary search here.
        size_t b = 0;
        while (b < len && v > bounds[b]) b++;
        if (b < len) self->buckets[b]++;
    }
    self->total += values->len;
    aggregator_plugin_list_f64_free(values);
    exports_sluice_plugin_aggregator_list_timestamp_free(times);
}

bool exports_sluice_plugin_aggregator_method_accumulator_merge(
    exports_sluice_plugin_aggregator_borrow_accumulator_t self,
    exports_sluice_plugin_aggregator_borrow_accumulator_t other, aggregator_plugin_string_t *err) {
    (void)err;
    for (size_t b = 0; b < self->config->bounds_len; b++) self->buckets[b] += other->buckets[b];
    self->total += other->total;
    return true;
}

void exports_sluice_plugin_aggregator_method_accumulator_snapshot(
    exports_sluice_plugin_aggregator_borrow_accumulator_t self, aggregator_plugin_list_u8_t *ret) {
    size_t len = (self->config->bounds_len + 1) * sizeof(uint64_t);
    ret->ptr = malloc(len);
    if (!ret->ptr) abort();
    ret->len = len;
    memcpy(ret->ptr, &self->total, sizeof(uint64_t));
    memcpy(ret->ptr + sizeof(uint64_t), self->buckets, self->config->bounds_len * sizeof(uint64_t));
}

void exports_sluice_plugin_aggregator_method_accumulator_finish(
    exports_sluice_plugin_aggregator_borrow_accumulator_t self, aggregator_plugin_list_option_f64_t *ret) {
    size_t len = self->config->bounds_len + 1;
    aggregator_plugin_option_f64_t *out = malloc(len * sizeof *out);
    if (!out) abort();
    uint64_t running = 0;
    for (size_t b = 0; b < len - 1; b++) {
        running += self->buckets[b];
        out[b] = (aggregator_plugin_option_f64_t){.is_some = true, .val = (double)running};
    }
    out[len - 1] = (aggregator_plugin_option_f64_t){.is_some = true, .val = (double)self->total};
    ret->ptr = out;
    ret->len = len;
}
