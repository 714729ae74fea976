#!/usr/bin/env python3
"""The seed's own module as a peer: the IoT Edge tutorial's filter module on the real Python
device SDK (azure-iot-device 2.14, asyncio client), run against edgeHub or the edgeHub
stand-in (tests/edgehub-standin) on the path the tutorial's module really ran.

Logic as in the tutorial (SEED.md): `IoTHubModuleClient.create_from_edge_environment()`
(the IOTEDGE_* variables, the workload API's socket for the SAS signature and the trust
bundle, TLS to IOTEDGE_GATEWAYHOSTNAME on edgeHub's port 8883); `on_message_received`
counts every message and, on input1, decodes the body, `json.loads` it and, when
machine.temperature > TEMPERATURE_THRESHOLD (25), sets `MessageType=Alert` and awaits
`send_message_to_output(message, "output1")`; an exception is printed and the next message
goes on; `on_twin_desired_properties_patch_received` replaces the threshold when a patch
holds TemperatureThreshold and counts the callbacks. The per-message print() is left out
(as in ../shared/peers/filters/seed_filter.py), nothing else is changed.

The SDK connects to port 8883, fixed in its mqtt_transport.py; run this in a network
namespace where the stand-in listens on 8883 (scripts/edge_path.py does: `unshare -n`).

On SIGTERM it prints its counters as one JSON line and exits.
usage: seed_module.py   (environment as the IoT Edge runtime gives it)
"""
import asyncio
import json
import os
import signal
import sys

from azure.iot.device.aio import IoTHubModuleClient

TEMPERATURE_THRESHOLD = 25
RECEIVED_MESSAGES = 0
TWIN_CALLBACKS = 0
stats = {"received": 0, "alerts": 0, "errors": 0, "twin_callbacks": 0}


async def receive_message_handler(message):
    global RECEIVED_MESSAGES
    RECEIVED_MESSAGES += 1
    stats["received"] = RECEIVED_MESSAGES
    try:
        if message.input_name == "input1":
            message_text = message.data.decode("utf-8")
            data = json.loads(message_text)
            if ("machine" in data and "temperature" in data["machine"]
                    and data["machine"]["temperature"] > TEMPERATURE_THRESHOLD):
                message.custom_properties["MessageType"] = "Alert"
                await client.send_message_to_output(message, "output1")
                stats["alerts"] += 1
    except Exception as e:  # the tutorial prints and goes on
        stats["errors"] += 1
        print("Unexpected error in receive_message_handler: %s" % e, flush=True)


def receive_twin_patch_handler(twin_patch):
    global TEMPERATURE_THRESHOLD, TWIN_CALLBACKS
    if "TemperatureThreshold" in twin_patch:
        TEMPERATURE_THRESHOLD = twin_patch["TemperatureThreshold"]
    TWIN_CALLBACKS += 1
    stats["twin_callbacks"] = TWIN_CALLBACKS
    print("threshold %s" % TEMPERATURE_THRESHOLD, flush=True)


def on_term(*_):
    print(json.dumps(stats), flush=True)
    os._exit(0)


async def main():
    await client.connect()
    print("connected", flush=True)
    while True:
        await asyncio.sleep(1000)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    client = IoTHubModuleClient.create_from_edge_environment()
    client.on_message_received = receive_message_handler
    client.on_twin_desired_properties_patch_received = receive_twin_patch_handler
    try:
        asyncio.run(main())
    except Exception as e:
        print("seed_module: %s" % e, file=sys.stderr, flush=True)
        sys.exit(1)
