// C side of the compiled engine: clock loops and the attached AXI memory models, so that Python crosses
// into the model once per run instead of once per cycle. Compiled together with the CXXRTL design.
#include <cstdint>
#include <vector>
#include <cstdio>
#include <cxxrtl/capi/cxxrtl_capi.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.h>
#include <cxxrtl/capi/cxxrtl_capi_vcd.cc>

#include "axi_slave.cc"

// VCD timing: one clock period is SCN_VCD_PERIOD time units (ns): the settled values of cycle n (what the
// rising edge samples) at n*P + P/2 with clk low, the state after the edge at (n+1)*P with clk high.
static const uint64_t SCN_VCD_PERIOD = 10;

struct scn_platform {
    cxxrtl_handle h;
    cxxrtl_object *clk;
    std::vector<scn_axi_slave *> slaves;
    uint64_t cycle = 0;
    cxxrtl_vcd vcd = nullptr;
    FILE *vcd_file = nullptr;
};

static inline void scn_vcd_sample(scn_platform *p, uint64_t time) {
    cxxrtl_vcd_sample(p->vcd, time);
    const char *data;
    size_t size;
    cxxrtl_vcd_read(p->vcd, &data, &size);
    if (size) fwrite(data, 1, size, p->vcd_file);
}

// A cycle in two halves, so Python can look at a cycle's settled outputs before its edge:
// begin: clock low, the slaves drive their outputs, settle;
// end: settle what Python set since, sample the handshakes, rising edge.
static inline void scn_begin(scn_platform *p) {
    p->clk->next[0] = 0;
    for (auto *s : p->slaves) scn_axi_drive(s);
    cxxrtl_step(p->h);
}

static inline void scn_end(scn_platform *p) {
    cxxrtl_step(p->h);
    for (auto *s : p->slaves) scn_axi_sample(s);
    if (p->vcd) scn_vcd_sample(p, p->cycle * SCN_VCD_PERIOD + SCN_VCD_PERIOD / 2);
    p->clk->next[0] = 1;
    cxxrtl_step(p->h);
    for (auto *s : p->slaves) scn_axi_advance(s);
    p->cycle++;
    if (p->vcd) scn_vcd_sample(p, p->cycle * SCN_VCD_PERIOD);
}

static inline void scn_cycle(scn_platform *p) {
    scn_begin(p);
    scn_end(p);
}

extern "C" {

void scn_cycle_begin(scn_platform *p) { scn_begin(p); }
void scn_cycle_end(scn_platform *p) { scn_end(p); }

scn_platform *scn_platform_create(cxxrtl_handle h, cxxrtl_object *clk) {
    return new scn_platform{h, clk, {}};
}

/* Close the trace (flushing it) if one is open. */
void scn_vcd_close(scn_platform *p) {
    if (p->vcd) {
        cxxrtl_vcd_destroy(p->vcd);
        fclose(p->vcd_file);
        p->vcd = nullptr;
        p->vcd_file = nullptr;
    }
}

void scn_platform_destroy(scn_platform *p) {
    scn_vcd_close(p);
    delete p;
}

/* Trace every signal except memories into `path` from the next cycle on (one VCD sample per clock
   phase); returns 0 if the file cannot be opened. */
int scn_vcd_open(scn_platform *p, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    scn_vcd_close(p);
    p->vcd_file = f;
    p->vcd = cxxrtl_vcd_create();
    cxxrtl_vcd_timescale(p->vcd, 1, "ns");
    cxxrtl_vcd_add_from_without_memories(p->vcd, p->h);
    return 1;
}

void scn_platform_add_slave(scn_platform *p, scn_axi_slave *s) { p->slaves.push_back(s); }

/* Advance `cycles` rising edges. */
uint64_t scn_run(scn_platform *p, uint64_t cycles) {
    for (uint64_t i = 0; i < cycles; i++) scn_cycle(p);
    return cycles;
}

/* Advance until the low word of `obj` equals `value` after an edge, or `max_cycles`. */
uint64_t scn_run_until(scn_platform *p, cxxrtl_object *obj, uint32_t value, uint64_t max_cycles) {
    for (uint64_t i = 0; i < max_cycles; i++) {
        scn_cycle(p);
        if (obj->curr[0] == value) return i + 1;
    }
    return max_cycles;
}

/* Collect object names, NUL-separated, into `buf`; returns the length needed. */
struct scn_name_buf { char *buf; size_t cap; size_t len; };
static void scn_collect(void *data, const char *name, cxxrtl_object *object, size_t parts) {
    scn_name_buf *n = (scn_name_buf *)data;
    for (const char *c = name; ; c++) {
        if (n->len < n->cap) n->buf[n->len] = *c;
        n->len++;
        if (!*c) break;
    }
}
size_t scn_names(cxxrtl_handle h, char *buf, size_t cap) {
    scn_name_buf n = { buf, cap, 0 };
    cxxrtl_enum(h, &n, scn_collect);
    return n.len;
}

}
