/* ports/stm32/check/stm32_hal_stand_in.h: the few ST HAL declarations sl_port_stm32.c uses, so
 * `make port-check` can compile the port on a PC. Not a HAL: nothing here is ever linked. */
#ifndef STM32_HAL_STAND_IN_H
#define STM32_HAL_STAND_IN_H

#include <stdint.h>

typedef enum { HAL_OK = 0, HAL_ERROR = 1, HAL_BUSY = 2, HAL_TIMEOUT = 3 } HAL_StatusTypeDef;
typedef struct {
    void *Instance;
} UART_HandleTypeDef;

HAL_StatusTypeDef HAL_UART_Transmit(UART_HandleTypeDef *huart, uint8_t *data, uint16_t size,
                                    uint32_t timeout);
HAL_StatusTypeDef HAL_UART_Receive_IT(UART_HandleTypeDef *huart, uint8_t *data, uint16_t size);
uint32_t HAL_GetTick(void);
void HAL_UART_RxCpltCallback(UART_HandleTypeDef *huart);
void HAL_UART_ErrorCallback(UART_HandleTypeDef *huart);

extern const uint32_t stand_in_uid[3];
#define UID_BASE ((uintptr_t)stand_in_uid)

#endif
