#pragma once
#define CONFIG_IDF_TARGET_ESP32 1
