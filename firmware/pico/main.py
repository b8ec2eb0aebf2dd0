# Entry point on the Pico W (copied to the flash with mpremote: docs/deploy.md).
import sys

import pb_config


def main():
    try:
        cfg = pb_config.load()
    except pb_config.ConfigError as e:
        print("settings: %s" % e)
        if sys.platform != "rp2":
            sys.exit(2)
        import time

        import machine

        led = machine.Pin("LED", machine.Pin.OUT)
        while True:  # the fault pattern, for ever: nothing to do without settings
            led.toggle()
            time.sleep_ms(100)
    from pb_app import App

    App(cfg).run()


main()
