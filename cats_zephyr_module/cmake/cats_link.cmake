# The radio link of a CATS application (samples/node, samples/gateway), one Kconfig fragment
# per link in ../conf, so every board that has the radio uses the same settings:
#
#   -DCATS_LINK=ieee802154   IEEE 802.15.4 (default on radio boards: nrf52840dk/nrf52840,
#                            nrf52_bsim)
#   -DCATS_LINK=ble          BLE extended advertising (also -DFILE_SUFFIX=ble)
#   -DCATS_LINK=sim          the swarm simulator's medium over a UART (default on native_sim,
#                            32 and 64 bit)
#
# Include before find_package(Zephyr): it appends to EXTRA_CONF_FILE / EXTRA_DTC_OVERLAY_FILE.
set(cats_conf_dir ${CMAKE_CURRENT_LIST_DIR}/../conf)
if(NOT DEFINED BOARD AND DEFINED ENV{BOARD})
  set(BOARD $ENV{BOARD})
endif()
if(BOARD MATCHES "^native_sim")
  set(cats_link_default sim)
elseif(FILE_SUFFIX STREQUAL "ble")
  set(cats_link_default ble)
else()
  set(cats_link_default ieee802154)
endif()
set(CATS_LINK ${cats_link_default} CACHE STRING "CATS radio link: ieee802154, ble or sim")
set_property(CACHE CATS_LINK PROPERTY STRINGS ieee802154 ble sim)
if(NOT EXISTS ${cats_conf_dir}/link_${CATS_LINK}.conf)
  message(FATAL_ERROR "CATS_LINK=${CATS_LINK}: no ${cats_conf_dir}/link_${CATS_LINK}.conf "
    "(ieee802154, ble or sim)")
endif()
list(APPEND EXTRA_CONF_FILE ${cats_conf_dir}/link_${CATS_LINK}.conf)
# 802.15.4 channel access (Kconfig CATS_802154_CHANNEL_ACCESS): -DCATS_802154_ACCESS=direct
# adds link_ieee802154_direct.conf (no CSMA-CA backoff/CCA on the ordered turns).
set(CATS_802154_ACCESS csma CACHE STRING "CATS 802.15.4 channel access: csma or direct")
set_property(CACHE CATS_802154_ACCESS PROPERTY STRINGS csma direct)
if(CATS_LINK STREQUAL "ieee802154" AND CATS_802154_ACCESS STREQUAL "direct")
  list(APPEND EXTRA_CONF_FILE ${cats_conf_dir}/link_ieee802154_direct.conf)
elseif(NOT CATS_802154_ACCESS MATCHES "^(csma|direct)$")
  message(FATAL_ERROR "CATS_802154_ACCESS=${CATS_802154_ACCESS}: csma or direct")
endif()
if(EXISTS ${cats_conf_dir}/link_${CATS_LINK}.overlay)
  list(APPEND EXTRA_DTC_OVERLAY_FILE ${cats_conf_dir}/link_${CATS_LINK}.overlay)
endif()
message(STATUS "CATS: link ${CATS_LINK} (802.15.4 access ${CATS_802154_ACCESS})")
