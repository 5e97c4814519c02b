// UART line model for the compiled engine: host bytes are serialised (8N1) onto the design's rx pin and
// the design's tx pin is deserialised into a byte queue, both at `divisor` cycles per bit, inside the C
// clock loop. Python (cosim/serial_board.py) only moves bytes between these queues and a pseudo-terminal,
// once per burst of cycles rather than once per cycle. Included after harness.cc (uses scn_begin/scn_end).
#include <cstdint>
#include <deque>

struct scn_uart {
    cxxrtl_object *rx, *tx;        // rx: the design's input (driven here); tx: the design's output (sampled)
    uint32_t divisor;
    std::deque<uint8_t> to_dev, from_dev;
    // serialiser (host -> design)
    uint32_t s_bits = 0, s_frame = 0, s_timer = 0;
    // deserialiser (design -> host): 0 idle, 1 start, 2 data, 3 stop
    uint32_t r_state = 0, r_timer = 0, r_bit = 0, r_shift = 0;
    uint64_t framing_errors = 0;
    uint64_t quiet = 0;            // cycles since either line was last active
};

static inline void scn_uart_cycle(scn_platform *p, scn_uart *u) {
    if (!u->s_bits && !u->to_dev.empty()) {
        u->s_frame = (1u << 9) | ((uint32_t)u->to_dev.front() << 1);   // start 0, data LSB first, stop 1
        u->to_dev.pop_front();
        u->s_bits = 10;
        u->s_timer = u->divisor;
    }
    u->rx->next[0] = u->s_bits ? (u->s_frame & 1) : 1;
    scn_begin(p);
    scn_end(p);
    if (u->s_bits && --u->s_timer == 0) {
        u->s_frame >>= 1;
        u->s_bits--;
        u->s_timer = u->divisor;
    }
    uint32_t line = u->tx->curr[0] & 1;
    switch (u->r_state) {
    case 0:
        if (!line) { u->r_state = 1; u->r_timer = u->divisor / 2; }
        break;
    case 1:
        if (--u->r_timer == 0) {
            if (line) u->r_state = 0;                 // a glitch
            else { u->r_state = 2; u->r_timer = u->divisor; u->r_bit = 0; u->r_shift = 0; }
        }
        break;
    case 2:
        if (--u->r_timer == 0) {
            u->r_shift |= line << u->r_bit;
            u->r_timer = u->divisor;
            if (++u->r_bit == 8) u->r_state = 3;
        }
        break;
    case 3:
        if (--u->r_timer == 0) {
            if (line) u->from_dev.push_back((uint8_t)u->r_shift);
            else u->framing_errors++;
            u->r_state = 0;
        }
        break;
    }
    if (u->s_bits || u->r_state || !line) u->quiet = 0;
    else u->quiet++;
}

extern "C" {

scn_uart *scn_uart_create(cxxrtl_handle h, const char *rx, const char *tx, uint32_t divisor) {
    size_t parts = 0;
    cxxrtl_object *orx = cxxrtl_get_parts(h, rx, &parts);
    if (!orx || parts != 1 || !orx->next) return nullptr;
    cxxrtl_object *otx = cxxrtl_get_parts(h, tx, &parts);
    if (!otx || parts != 1) return nullptr;
    scn_uart *u = new scn_uart();
    u->rx = orx; u->tx = otx; u->divisor = divisor < 2 ? 2 : divisor;
    u->rx->next[0] = 1;
    return u;
}

void scn_uart_destroy(scn_uart *u) { delete u; }

void scn_uart_push(scn_uart *u, const uint8_t *data, size_t n) {
    for (size_t i = 0; i < n; i++) u->to_dev.push_back(data[i]);
}

size_t scn_uart_pop(scn_uart *u, uint8_t *buf, size_t cap) {
    size_t n = 0;
    while (n < cap && !u->from_dev.empty()) { buf[n++] = u->from_dev.front(); u->from_dev.pop_front(); }
    return n;
}

/* Bytes still to send to the design plus one per line mid-frame: 0 when both lines are idle. */
uint64_t scn_uart_busy(scn_uart *u) { return u->to_dev.size() + (u->s_bits != 0) + (u->r_state != 0); }

uint64_t scn_uart_framing_errors(scn_uart *u) { return u->framing_errors; }

/* Run up to `max_cycles`; return early when both lines have just been quiet for `quiet_cycles` (a
   response is complete, or the host's bytes are all sent): Python then moves bytes and looks for more. */
uint64_t scn_uart_run(scn_platform *p, scn_uart *u, uint64_t max_cycles, uint64_t quiet_cycles) {
    for (uint64_t i = 0; i < max_cycles; i++) {
        scn_uart_cycle(p, u);
        if (u->quiet == quiet_cycles && u->to_dev.empty() && !u->s_bits) return i + 1;
    }
    return max_cycles;
}

}
