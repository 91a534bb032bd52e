/* ports/stm32/sl_port_stm32.c: the spikeloop firmware on an STM32 with the ST HAL (CubeMX project).
 *
 * Everything board-independent (protocol, neuron core, program reader) is the portable C99 in
 * firmware_stubs/. This file is the UART glue: received bytes go from the UART interrupt into a
 * ring buffer; the main loop feeds them to sl_proto_feed, whose responses go out through
 * HAL_UART_Transmit. What depends on your board is marked `PORT:` — fill those in (or check them)
 * and the rest works as is.
 *
 * Integration (CubeMX project):
 *   1. Add firmware_stubs/sl_*.c and this file to the build; add firmware_stubs/ to the include
 *      path. Size the build for your RAM with -D options (see sl_config.h), e.g. on a 128 KiB part:
 *      -DSL_MAX_PROGRAM_BYTES=65536u -DSL_MAX_PAYLOAD=256 -DSL_MAX_NEURONS=256
 *      -DSL_BOARD_NAME='"stm32-nucleo"'.
 *   2. In main.c, after MX_USARTx_UART_Init(): call sl_port_start(); then in the while(1) loop
 *      call sl_port_poll().
 *   3. Enable the USART global interrupt in CubeMX (NVIC), 8N1, the baud the host uses
 *      (spikeloop's default is 115200: serial:///dev/ttyACM0?baud=115200).
 *
 * `make port-check` compiles this file against ports/stm32/check/stm32_hal_stand_in.h (a few
 * HAL declarations) to keep it in step with the firmware API; it is not linked there. */
#include <stdint.h>
#include <string.h>

#include "sl_proto.h"

#ifdef SL_PORT_CHECK
#include "stm32_hal_stand_in.h"
#else
/* PORT: the CubeMX-generated header that declares the HAL and your UART handle. */
#include "main.h"
#endif

/* PORT: the UART handle CubeMX generated for the link to the host (USART2 is the ST-LINK virtual
 * COM port on Nucleo-64 boards). */
extern UART_HandleTypeDef huart2;
#define SL_UART (&huart2)

/* PORT: a per-device value for the boot id (here: the 96-bit unique ID's first word, mixed with
 * the tick at start). UID_BASE is defined by the CMSIS device header. */
#ifndef SL_PORT_UID_WORD
#define SL_PORT_UID_WORD (*(const volatile uint32_t *)UID_BASE)
#endif

/* PORT: how long a response may take to leave the UART before the port gives up (ms). */
#define SL_TX_TIMEOUT_MS 1000u

#define SL_RX_RING 512u /* power of two; holds bytes between two sl_port_poll() calls */

static sl_proto g_board;
static volatile uint8_t g_ring[SL_RX_RING];
static volatile uint32_t g_head, g_tail; /* written by the ISR / by the main loop */
static volatile uint32_t g_dropped;      /* bytes lost to a full ring (the protocol retransmits) */
static uint8_t g_rx_byte;

void sl_port_start(void);
void sl_port_poll(void);

static int uart_write(void *user, const uint8_t *data, size_t n)
{
    (void)user;
    while (n > 0) {
        uint16_t chunk = (uint16_t)(n > 0xFFFFu ? 0xFFFFu : n);
        if (HAL_UART_Transmit(SL_UART, (uint8_t *)data, chunk, SL_TX_TIMEOUT_MS) != HAL_OK)
            return -1;
        data += chunk;
        n -= chunk;
    }
    return 0;
}

/* Called by the HAL from the UART interrupt for every received byte. */
void HAL_UART_RxCpltCallback(UART_HandleTypeDef *huart)
{
    if (huart != SL_UART)
        return;
    if (g_head - g_tail < SL_RX_RING)
        g_ring[g_head++ % SL_RX_RING] = g_rx_byte;
    else
        g_dropped++;
    (void)HAL_UART_Receive_IT(SL_UART, &g_rx_byte, 1);
}

/* Framing/overrun errors: restart reception; the damaged frame is NACKed or times out. */
void HAL_UART_ErrorCallback(UART_HandleTypeDef *huart)
{
    if (huart == SL_UART)
        (void)HAL_UART_Receive_IT(SL_UART, &g_rx_byte, 1);
}

void sl_port_start(void)
{
    sl_ostream out;
    out.write = uart_write;
    out.user = 0;
    g_head = g_tail = 0;
    sl_proto_init(&g_board, out, SL_PORT_UID_WORD ^ (HAL_GetTick() * 2654435761u));
    (void)HAL_UART_Receive_IT(SL_UART, &g_rx_byte, 1);
}

void sl_port_poll(void)
{
    uint8_t chunk[64];
    size_t n = 0;
    while (g_tail != g_head && n < sizeof chunk)
        chunk[n++] = g_ring[g_tail++ % SL_RX_RING];
    if (n > 0 && sl_proto_feed(&g_board, chunk, n) != SL_OK) {
        /* The UART transmit failed: the host times out and retransmits; nothing to do here. */
    }
}
