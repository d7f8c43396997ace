"""A pymodbus TCP server for device tests, with a line protocol on stdin/stdout to change and
read values through pymodbus's own client:

    set hr|co <addr> <value>    -> OK
    get hr|co|ir|di <addr>      -> <value>

Prints READY once the server answers. Exits when stdin closes or after the deadline (seconds,
second argument, default 120)."""

import asyncio
import os
import sys

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartAsyncTcpServer

PORT = int(sys.argv[1])
DEADLINE = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0


async def control():
    client = AsyncModbusTcpClient("127.0.0.1", port=PORT)
    for _ in range(400):
        if await client.connect():
            break
        await asyncio.sleep(0.025)
    else:
        print("FAILED", flush=True)
        os._exit(1)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            os._exit(0)
        parts = line.split()
        if len(parts) < 3:
            print("ERR", flush=True)
            continue
        cmd, table, addr = parts[0], parts[1], int(parts[2])
        try:
            if cmd == "set" and table == "hr":
                await client.write_register(addr, int(parts[3]) & 0xFFFF, device_id=1)
                print("OK", flush=True)
            elif cmd == "set" and table == "co":
                await client.write_coil(addr, parts[3] == "1", device_id=1)
                print("OK", flush=True)
            elif cmd == "get" and table == "hr":
                r = await client.read_holding_registers(addr, count=1, device_id=1)
                print(r.registers[0], flush=True)
            elif cmd == "get" and table == "ir":
                r = await client.read_input_registers(addr, count=1, device_id=1)
                print(r.registers[0], flush=True)
            elif cmd == "get" and table == "co":
                r = await client.read_coils(addr, count=1, device_id=1)
                print(int(r.bits[0]), flush=True)
            elif cmd == "get" and table == "di":
                r = await client.read_discrete_inputs(addr, count=1, device_id=1)
                print(int(r.bits[0]), flush=True)
            else:
                print("ERR", flush=True)
        except Exception as e:  # noqa: BLE001 - report any failure to the test
            print(f"ERR {e}", flush=True)


async def main():
    asyncio.get_running_loop().call_later(DEADLINE, os._exit, 0)
    device = ModbusDeviceContext(
        co=ModbusSequentialDataBlock(1, [False] * 64),
        di=ModbusSequentialDataBlock(1, [True] * 64),
        hr=ModbusSequentialDataBlock(1, [0] * 64),
        ir=ModbusSequentialDataBlock(1, [i * 10 for i in range(64)]),
    )
    context = ModbusServerContext(devices=device, single=True)
    asyncio.create_task(control())
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", PORT))


asyncio.run(main())
