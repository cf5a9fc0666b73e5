"""What a backend's Modal app is built from, and how it is deployed: the image
(``promptwire.modal.image``), the scale-out settings (``promptwire.modal.scaling``), the cold
start's phases (``promptwire.modal.coldstart``), a container that steps aside when its engine
is out of order (``promptwire.modal.retire``) and ``promptwire deploy``
(``promptwire.modal.deploy``).

Import the module you need: this package imports none of them, so a plugin's settings can use
``ModalScaling`` without importing ``modal`` on the client path.
"""

__all__: list[str] = []
