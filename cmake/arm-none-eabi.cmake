# CMake toolchain file: bare-metal Cortex-M4F (nRF52840 class) with Debian's arm-none-eabi-gcc
# and newlib-nano. Used by cats_zephyr_module/m4 (`make m4` -> build/m4) and bench/kernels.
#
#   cmake -S cats_zephyr_module/m4 -B build/m4 -DCMAKE_TOOLCHAIN_FILE=cmake/arm-none-eabi.cmake
#
# Zephyr builds do not use this file: west/Zephyr bring their own toolchain setup.

set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)

set(CATS_ARM_PREFIX "arm-none-eabi-" CACHE STRING "prefix of the GNU Arm Embedded tools")
find_program(CMAKE_C_COMPILER ${CATS_ARM_PREFIX}gcc REQUIRED)
find_program(CMAKE_ASM_COMPILER ${CATS_ARM_PREFIX}gcc REQUIRED)
find_program(CMAKE_AR ${CATS_ARM_PREFIX}ar REQUIRED)
find_program(CMAKE_RANLIB ${CATS_ARM_PREFIX}ranlib REQUIRED)
find_program(CMAKE_OBJCOPY ${CATS_ARM_PREFIX}objcopy REQUIRED)
find_program(CMAKE_SIZE ${CATS_ARM_PREFIX}size)

# try_compile() cannot link a bare-metal program without a linker script and startup code.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)

# Cortex-M4 with the single-precision FPU, hard-float ABI (nRF52840: Cortex-M4F @ 64 MHz).
# The DSP extension (__ARM_FEATURE_DSP: SMLAD, SXTB16, ...) is part of -mcpu=cortex-m4.
set(CATS_M4_CPU_FLAGS "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16")
set(CMAKE_C_FLAGS_INIT "${CATS_M4_CPU_FLAGS} -ffunction-sections -fdata-sections -fno-common")
set(CMAKE_ASM_FLAGS_INIT "${CATS_M4_CPU_FLAGS}")
# newlib-nano; nosys.specs gives the syscall stubs (_sbrk, _write, ...) a bare-metal image needs.
set(CMAKE_EXE_LINKER_FLAGS_INIT
    "${CATS_M4_CPU_FLAGS} --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections")
set(CMAKE_C_FLAGS_MINSIZEREL_INIT "-Os -DNDEBUG")
set(CMAKE_C_FLAGS_RELEASE_INIT "-O2 -DNDEBUG")
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE MinSizeRel CACHE STRING "-Os by default for the node image")
endif()

# Search headers/libraries only in the target environment, programs only on the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
