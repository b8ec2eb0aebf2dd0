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
        from pb_led import Led

        led = Led(machine.Pin("LED", machine.Pin.OUT))
        led.show("fault")
        while True:  # nothing to do without settings: show it, for ever
            time.sleep_ms(led.tick(time.ticks_ms()))
    from pb_app import App

    App(cfg).run()


main()
